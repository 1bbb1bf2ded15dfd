//! Unit tests: every error path, Linux's merge rules, and that writers do not wait for faults
//! on other VMAs.
#![cfg(not(feature = "shuttle"))]

use maple::testing::finishes_beside_parked_reader;
use std::sync::Arc;
use vma::{AddressSpace, Errno, Layout, Lookup, MapFlags, MappedFile, NoFlush, PAGE_SIZE, Prot, RemapFlags};

const P: u64 = PAGE_SIZE;

#[derive(Debug)]
struct File(&'static str);

impl MappedFile for File {
    fn name(&self) -> &str {
        self.0
    }
}

fn file(name: &'static str) -> Arc<dyn MappedFile> {
    Arc::new(File(name))
}

/// A file with what a filesystem gives it: huge pages (hugetlbfs), a device and inode, or a
/// refusal of MAP_SYNC (ext4 or xfs without DAX).
#[derive(Debug)]
struct Special {
    name: &'static str,
    page_size: u64,
    identity: vma::FileIdentity,
    refuses_sync: bool,
}

impl Special {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            page_size: P,
            identity: vma::FileIdentity::default(),
            refuses_sync: false,
        }
    }
}

impl MappedFile for Special {
    fn name(&self) -> &str {
        self.name
    }

    fn page_size(&self) -> u64 {
        self.page_size
    }

    fn identity(&self) -> vma::FileIdentity {
        self.identity
    }

    fn refuses_sync(&self) -> bool {
        self.refuses_sync
    }
}

const LAYOUT: Layout = Layout {
    low: 0x10000,
    high: 0x10000 + 64 * P,
    mmap_base: 0x10000 + 48 * P,
};
const BASE: u64 = 0x20000;

fn space() -> AddressSpace {
    AddressSpace::new(LAYOUT, NoFlush).unwrap()
}

fn errno<T: std::fmt::Debug>(result: vma::Result<T>) -> Errno {
    result.expect_err("expected an error").errno
}

fn anon(space: &AddressSpace, addr: u64, pages: u64, prot: Prot) -> u64 {
    space
        .mmap(addr, pages * P, prot, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
        .unwrap()
}

/// The mappings as `start-end perms offset [name]` (the maps lines without the device and
/// inode columns, whose format `maps_are_printed_as_linux_prints_them` checks).
fn lines(space: &AddressSpace) -> Vec<String> {
    space.validate().unwrap();
    space
        .maps()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mut short = fields[..3].join(" ");
            if fields.len() > 5 {
                short = format!("{short} {}", fields[5..].join(" "));
            }
            short
        })
        .collect()
}

#[test]
fn layout_errors() {
    let bad = [
        Layout { low: 1, ..LAYOUT },
        Layout {
            high: LAYOUT.low,
            ..LAYOUT
        },
        Layout {
            mmap_base: LAYOUT.high + P,
            ..LAYOUT
        },
    ];
    for layout in bad {
        assert_eq!(
            errno(AddressSpace::new(layout, NoFlush)),
            Errno::EINVAL,
            "{layout:?}"
        );
    }
}

#[test]
fn mmap_errors() {
    let s = space();
    let rw = Prot::READ_WRITE;
    let anon = MapFlags::PRIVATE_ANONYMOUS;
    assert_eq!(errno(s.mmap(0, 0, rw, anon, None)), Errno::EINVAL, "zero length");
    assert_eq!(
        errno(s.mmap(0, u64::MAX, rw, anon, None)),
        Errno::ENOMEM,
        "length overflows"
    );
    assert_eq!(
        errno(s.mmap(BASE + 1, P, rw, anon.fixed(), None)),
        Errno::EINVAL,
        "unaligned fixed"
    );
    assert_eq!(
        errno(s.mmap(0, P, rw, MapFlags { shared: true, ..anon }, None)),
        Errno::EINVAL,
        "shared and private"
    );
    assert_eq!(
        errno(s.mmap(
            0,
            P,
            rw,
            MapFlags {
                private: false,
                ..anon
            },
            None
        )),
        Errno::EINVAL,
        "neither"
    );
    assert_eq!(
        errno(s.mmap(
            0,
            P,
            rw,
            MapFlags {
                growsdown: true,
                ..MapFlags::SHARED
            },
            Some((file("f"), 0))
        )),
        Errno::EINVAL
    );
    assert_eq!(
        errno(s.mmap(0, P, rw, MapFlags::PRIVATE, None)),
        Errno::EBADF,
        "file mapping without a file"
    );
    assert_eq!(
        errno(s.mmap(0, P, rw, MapFlags::PRIVATE, Some((file("f"), 1)))),
        Errno::EINVAL,
        "unaligned offset"
    );
    assert_eq!(
        errno(s.mmap(LAYOUT.high - P, 2 * P, rw, anon.fixed(), None)),
        Errno::ENOMEM,
        "fixed past the top"
    );
    assert_eq!(
        errno(s.mmap(LAYOUT.low - P, P, rw, anon.fixed(), None)),
        Errno::EPERM,
        "fixed below the bottom"
    );
    assert_eq!(
        errno(s.mmap(0, 65 * P, rw, anon, None)),
        Errno::ENOMEM,
        "larger than the space"
    );
    crate::anon(&s, BASE, 2, rw);
    assert_eq!(
        errno(s.mmap(BASE + P, P, rw, anon.fixed_noreplace(), None)),
        Errno::EEXIST
    );
    assert_eq!(lines(&s).len(), 1, "failed calls changed nothing");
    // Fill the space, then ask for more.
    s.mmap(LAYOUT.low, 64 * P, rw, anon.fixed(), None).unwrap();
    assert_eq!(errno(s.mmap(0, P, rw, anon, None)), Errno::ENOMEM, "out of space");
}

#[test]
fn mmap_placement() {
    let s = space();
    let rw = Prot::READ_WRITE;
    let anon = MapFlags::PRIVATE_ANONYMOUS;
    // Top-down below the mmap base.
    let a = s.mmap(0, 2 * P, rw, anon, None).unwrap();
    assert_eq!(a, LAYOUT.mmap_base - 2 * P);
    // A free hint is used (rounded up to a page).
    assert_eq!(s.mmap(BASE - 100, P, Prot::READ, anon, None).unwrap(), BASE);
    // A hint that is not free falls back to the search.
    let b = s.mmap(BASE, P, Prot::READ_EXEC, anon, None).unwrap();
    assert_eq!(b, a - P);
    // No room below the base: bottom-up above it.
    s.mmap(LAYOUT.low, 48 * P, rw, anon.fixed(), None).unwrap();
    assert_eq!(s.mmap(0, P, Prot::READ, anon, None).unwrap(), LAYOUT.mmap_base);
}

#[test]
fn munmap_errors_and_empty_ranges() {
    let s = space();
    assert_eq!(errno(s.munmap(BASE + 1, P)), Errno::EINVAL);
    assert_eq!(errno(s.munmap(BASE, 0)), Errno::EINVAL);
    assert_eq!(errno(s.munmap(LAYOUT.high, P)), Errno::EINVAL);
    assert_eq!(errno(s.munmap(BASE, u64::MAX)), Errno::EINVAL);
    assert_eq!(
        errno(s.munmap(BASE, u64::MAX - P + 2)),
        Errno::EINVAL,
        "within a page of the top"
    );
    s.munmap(BASE, 4 * P).unwrap();
    assert_eq!(
        s.stats().replacements.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing to wait for"
    );
}

#[test]
fn munmap_splits() {
    let s = space();
    anon(&s, BASE, 4, Prot::READ_WRITE);
    s.munmap(BASE + P, 2 * P).unwrap();
    assert_eq!(
        lines(&s),
        [
            "00020000-00021000 rw-p 00000000",
            "00023000-00024000 rw-p 00000000"
        ]
    );
}

#[test]
fn mprotect_errors_and_partial_application() {
    let s = space();
    assert_eq!(errno(s.mprotect(BASE + 1, P, Prot::READ)), Errno::EINVAL);
    s.mprotect(BASE, 0, Prot::READ).unwrap();
    assert_eq!(
        errno(s.mprotect(BASE, P, Prot::READ)),
        Errno::ENOMEM,
        "starts in a hole"
    );
    anon(&s, BASE, 2, Prot::READ_WRITE);
    anon(&s, BASE + 3 * P, 1, Prot::READ_WRITE);
    assert_eq!(errno(s.mprotect(BASE - P, 2 * P, Prot::READ)), Errno::ENOMEM);
    assert_eq!(lines(&s).len(), 2, "nothing changed");
    // A hole in the middle: like Linux, the part before the hole changes.
    assert_eq!(errno(s.mprotect(BASE + P, 3 * P, Prot::READ)), Errno::ENOMEM);
    assert_eq!(
        lines(&s),
        [
            "00020000-00021000 rw-p 00000000",
            "00021000-00022000 r--p 00000000",
            "00023000-00024000 rw-p 00000000",
        ]
    );
}

#[test]
fn mprotect_splits_into_three_and_merges_back() {
    let s = space();
    anon(&s, BASE, 3, Prot::READ_WRITE);
    s.mprotect(BASE + P, P, Prot::READ).unwrap();
    assert_eq!(
        lines(&s),
        [
            "00020000-00021000 rw-p 00000000",
            "00021000-00022000 r--p 00000000",
            "00022000-00023000 rw-p 00000000",
        ]
    );
    s.mprotect(BASE + P, P, Prot::READ_WRITE).unwrap();
    assert_eq!(lines(&s), ["00020000-00023000 rw-p 00000000"]);
    // Same permissions: nothing is replaced.
    let before = s.stats().replacements.load(std::sync::atomic::Ordering::Relaxed);
    s.mprotect(BASE, 3 * P, Prot::READ_WRITE).unwrap();
    assert_eq!(
        s.stats().replacements.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
}

#[test]
fn merges_left_right_and_both() {
    let s = space();
    anon(&s, BASE, 1, Prot::READ_WRITE);
    anon(&s, BASE + P, 1, Prot::READ_WRITE);
    assert_eq!(lines(&s), ["00020000-00022000 rw-p 00000000"], "left merge");
    anon(&s, BASE + 4 * P, 1, Prot::READ_WRITE);
    anon(&s, BASE + 3 * P, 1, Prot::READ_WRITE);
    assert_eq!(lines(&s).len(), 2, "right merge");
    anon(&s, BASE + 2 * P, 1, Prot::READ_WRITE);
    assert_eq!(lines(&s), ["00020000-00025000 rw-p 00000000"], "both sides");
}

/// A write fault's `anon_vma` (`prepare_anon`, as the fault layer calls it).
fn written(space: &AddressSpace, addr: u64) -> vma::AnonVma {
    let guard = space.guard();
    let vma::Lookup::Mapped(vma) = space.lookup(addr, &guard) else {
        panic!("nothing usable at {addr:#x}");
    };
    space.prepare_anon(vma)
}

/// Linux's anon_vma rules (mm/vma.c `is_mergeable_anon_vma`, `can_vma_merge_right`; mm/rmap.c
/// `find_mergeable_anon_vma`): VMAs written apart do not merge, a VMA never written merges with
/// either but not with both, pieces of one VMA merge again, and a VMA first written next to a
/// written one that differs only in permissions shares its anon_vma.
#[test]
fn written_vmas_merge_only_with_their_own_anon_vma() {
    let s = space();
    anon(&s, BASE, 2, Prot::READ_WRITE);
    anon(&s, BASE + 3 * P, 1, Prot::READ_WRITE);
    let (left, right) = (written(&s, BASE), written(&s, BASE + 3 * P));
    assert_ne!(left, right);
    anon(&s, BASE + 2 * P, 1, Prot::READ_WRITE);
    assert_eq!(
        lines(&s),
        [
            "00020000-00023000 rw-p 00000000",
            "00023000-00024000 rw-p 00000000"
        ],
        "a new VMA between two written apart joins the left one only"
    );
    assert_eq!(
        written(&s, BASE + 2 * P),
        left,
        "the merged VMA keeps the left one's"
    );

    // Pieces of one VMA share its anon_vma and merge again.
    s.mprotect(BASE + P, P, Prot::READ).unwrap();
    s.mprotect(BASE + P, P, Prot::READ_WRITE).unwrap();
    assert_eq!(lines(&s).len(), 2);

    // Shared with a compatible neighbour at the first write: then alike, they merge.
    let t = space();
    anon(&t, BASE, 1, Prot::READ_WRITE);
    anon(&t, BASE + P, 1, Prot::new(true, true, true));
    let first = written(&t, BASE);
    assert_eq!(written(&t, BASE + P), first);
    t.mprotect(BASE + P, P, Prot::READ_WRITE).unwrap();
    assert_eq!(lines(&t), ["00020000-00022000 rw-p 00000000"]);
}

/// mprotect keeps VM_ACCOUNT on a private mapping made read-only, except on anonymous memory
/// never written (no anon_vma), which is uncharged (mm/mprotect.c `mprotect_fixup`); the flag
/// decides whether it merges with a never-writable neighbour.
#[test]
fn read_only_again_is_uncharged_only_if_never_written() {
    let s = space();
    anon(&s, BASE, 1, Prot::READ);
    anon(&s, BASE + P, 1, Prot::READ_WRITE);
    s.mprotect(BASE + P, P, Prot::READ).unwrap();
    assert_eq!(lines(&s), ["00020000-00022000 r--p 00000000"]);
    anon(&s, BASE + 2 * P, 1, Prot::READ_WRITE);
    written(&s, BASE + 2 * P);
    s.mprotect(BASE + 2 * P, P, Prot::READ).unwrap();
    assert_eq!(lines(&s).len(), 2, "written: still charged, kept apart");
}

#[test]
fn no_merge_across_backings_or_offsets() {
    let s = space();
    let (lib, other) = (file("/lib/a.so"), file("/lib/b.so"));
    let private = MapFlags::PRIVATE.fixed();
    s.mmap(BASE, P, Prot::READ, private, Some((lib.clone(), 0)))
        .unwrap();
    s.mmap(BASE + P, P, Prot::READ, private, Some((lib.clone(), P)))
        .unwrap();
    assert_eq!(
        lines(&s),
        ["00020000-00022000 r--p 00000000 /lib/a.so"],
        "contiguous offsets merge"
    );
    s.mmap(BASE + 2 * P, P, Prot::READ, private, Some((lib.clone(), 5 * P)))
        .unwrap();
    s.mmap(BASE + 3 * P, P, Prot::READ, private, Some((other, 6 * P)))
        .unwrap();
    s.mmap(
        BASE + 4 * P,
        P,
        Prot::READ,
        MapFlags::PRIVATE_ANONYMOUS.fixed(),
        None,
    )
    .unwrap();
    s.mmap(
        BASE + 5 * P,
        P,
        Prot::READ,
        MapFlags::SHARED.fixed(),
        Some((lib, 6 * P)),
    )
    .unwrap();
    assert_eq!(
        lines(&s),
        [
            "00020000-00022000 r--p 00000000 /lib/a.so",
            "00022000-00023000 r--p 00005000 /lib/a.so",
            "00023000-00024000 r--p 00006000 /lib/b.so",
            "00024000-00025000 r--p 00000000",
            "00025000-00026000 r--s 00006000 /lib/a.so",
        ]
    );
    // Shared anonymous mappings are distinct objects: never merged.
    let shared_anon = MapFlags {
        shared: true,
        private: false,
        ..MapFlags::PRIVATE_ANONYMOUS
    }
    .fixed();
    s.mmap(BASE + 8 * P, P, Prot::READ, shared_anon, None).unwrap();
    s.mmap(BASE + 9 * P, P, Prot::READ, shared_anon, None).unwrap();
    assert_eq!(
        lines(&s)[5..],
        [
            "00028000-00029000 r--s 00000000 /dev/zero (deleted)",
            "00029000-0002a000 r--s 00000000 /dev/zero (deleted)"
        ]
    );
}

#[test]
fn map_fixed_replaces_and_merges() {
    let s = space();
    anon(&s, BASE, 4, Prot::READ_WRITE);
    s.mmap(BASE + P, P, Prot::READ, MapFlags::PRIVATE_ANONYMOUS.fixed(), None)
        .unwrap();
    assert_eq!(lines(&s).len(), 3);
    // The same attributes again over the middle: all one VMA.
    anon(&s, BASE + P, 1, Prot::READ_WRITE);
    assert_eq!(lines(&s), ["00020000-00024000 rw-p 00000000"]);
    // MAP_FIXED over an identical mapping still replaces it (the contents must go).
    let before = s.stats().replacements.load(std::sync::atomic::Ordering::Relaxed);
    anon(&s, BASE + P, 1, Prot::READ_WRITE);
    let after = s.stats().replacements.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after, before + 1);
    assert_eq!(lines(&s), ["00020000-00024000 rw-p 00000000"]);
}

#[test]
fn mremap_errors() {
    let s = space();
    let maymove = RemapFlags {
        maymove: true,
        fixed: false,
    };
    anon(&s, BASE, 2, Prot::READ_WRITE);
    anon(&s, BASE + 2 * P, 2, Prot::READ);
    assert_eq!(
        errno(s.mremap(
            BASE,
            P,
            2 * P,
            RemapFlags {
                maymove: false,
                fixed: true
            },
            0
        )),
        Errno::EINVAL
    );
    assert_eq!(errno(s.mremap(BASE + 1, P, 2 * P, maymove, 0)), Errno::EINVAL);
    assert_eq!(errno(s.mremap(BASE, P, 0, maymove, 0)), Errno::EINVAL);
    assert_eq!(errno(s.mremap(BASE, 0, P, maymove, 0)), Errno::EINVAL);
    assert_eq!(
        errno(s.mremap(BASE, 3 * P, 4 * P, maymove, 0)),
        Errno::EFAULT,
        "spans two VMAs"
    );
    assert_eq!(
        errno(s.mremap(BASE + 8 * P, P, 2 * P, maymove, 0)),
        Errno::EFAULT,
        "unmapped"
    );
    assert_eq!(
        errno(s.mremap(BASE, 2 * P, 3 * P, RemapFlags::default(), 0)),
        Errno::ENOMEM,
        "blocked, may not move"
    );
    let fixed = RemapFlags {
        maymove: true,
        fixed: true,
    };
    assert_eq!(
        errno(s.mremap(BASE, 2 * P, 2 * P, fixed, BASE + P)),
        Errno::EINVAL,
        "overlapping fixed"
    );
    assert_eq!(
        errno(s.mremap(BASE, 2 * P, 2 * P, fixed, BASE + 8 * P + 1)),
        Errno::EINVAL,
        "unaligned target"
    );
}

#[test]
fn mremap_shrinks_grows_and_moves_keeping_the_offset() {
    let s = space();
    anon(&s, BASE, 4, Prot::READ_WRITE);
    assert_eq!(
        s.mremap(BASE, 4 * P, 2 * P, RemapFlags::default(), 0).unwrap(),
        BASE
    );
    assert_eq!(lines(&s), ["00020000-00022000 rw-p 00000000"]);
    assert_eq!(
        s.mremap(BASE, 2 * P, 3 * P, RemapFlags::default(), 0).unwrap(),
        BASE,
        "grows in place"
    );
    assert_eq!(lines(&s), ["00020000-00023000 rw-p 00000000"]);
    anon(&s, BASE + 3 * P, 1, Prot::READ);
    let moved = s
        .mremap(
            BASE,
            3 * P,
            4 * P,
            RemapFlags {
                maymove: true,
                fixed: false,
            },
            0,
        )
        .unwrap();
    assert_ne!(moved, BASE);
    let guard = s.guard();
    let Lookup::Mapped(vma) = s.lookup(moved, &guard) else {
        panic!("moved mapping is missing")
    };
    assert_eq!(
        vma.mapping().pgoff,
        BASE / P,
        "a moved anonymous VMA keeps its page offset"
    );
    drop(guard);
    // Moving it back next to a compatible neighbour: it does not merge (offsets differ)...
    let back = s
        .mremap(
            moved,
            4 * P,
            4 * P,
            RemapFlags {
                maymove: true,
                fixed: true,
            },
            BASE + 8 * P,
        )
        .unwrap();
    assert_eq!(back, BASE + 8 * P);
    anon(&s, BASE + 12 * P, 1, Prot::READ_WRITE);
    assert_eq!(
        lines(&s).len(),
        3,
        "a moved anonymous VMA does not merge with a fresh neighbour"
    );
}

#[test]
fn brk_grows_shrinks_and_labels_the_heap() {
    let s = space();
    s.set_heap_start(BASE).unwrap();
    assert_eq!(s.brk(BASE - P), BASE, "below the heap start: unchanged");
    assert_eq!(s.brk(BASE + 3 * P + 5), BASE + 3 * P + 5);
    assert_eq!(lines(&s), ["00020000-00024000 rw-p 00000000 [heap]"]);
    assert_eq!(s.brk(BASE + P), BASE + P);
    assert_eq!(lines(&s), ["00020000-00021000 rw-p 00000000 [heap]"]);
    anon(&s, BASE + 4 * P, 1, Prot::READ);
    assert_eq!(
        s.brk(BASE + 4 * P),
        BASE + P,
        "no room before the next mapping (guard page)"
    );
    assert_eq!(errno(s.set_heap_start(LAYOUT.high)), Errno::EINVAL);
}

#[test]
fn a_request_checked_against_another_layout_is_refused() {
    use vma::request::{MmapRequest, RemapRequest};
    let s = space();
    let far = Layout::X86_64.mmap_base;
    let flags = MapFlags::PRIVATE_ANONYMOUS.fixed();
    let map = MmapRequest::new(Layout::X86_64, far, P, Prot::READ, flags, None).unwrap();
    assert_eq!(s.map(map).unwrap_err().errno, Errno::EINVAL);
    let moving = RemapFlags {
        maymove: true,
        fixed: true,
    };
    let a = s.mmap(BASE, P, Prot::READ, flags, None).unwrap();
    let remap = RemapRequest::new(Layout::X86_64, a, P, P, moving, far).unwrap();
    assert_eq!(s.remap(remap).unwrap_err().errno, Errno::EINVAL);
    let remap = RemapRequest::new(LAYOUT, a, P, P, moving, a + 4 * P).unwrap();
    assert_eq!(s.remap(remap), Ok(a + 4 * P), "a request for this layout works");
    s.validate().unwrap();
}

/// Two VMAs with a hole between them: `[BASE, BASE + 4P)` and `[BASE + 8P, BASE + 12P)`.
fn two_vmas() -> AddressSpace {
    let space = space();
    anon(&space, BASE, 4, Prot::READ_WRITE);
    anon(&space, BASE + 8 * P, 4, Prot::READ_WRITE);
    space
}

/// Whether `change` returns while another thread holds a guard keyed at `addr` (as a fault
/// does) with the VMA it found there.
fn finishes_beside_fault(space: &AddressSpace, addr: u64, change: impl FnOnce(&AddressSpace) + Send) -> bool {
    finishes_beside_parked_reader(
        |park| {
            let guard = space.guard_at(addr);
            let Lookup::Mapped(vma) = space.lookup(addr, &guard) else {
                panic!("{addr:#x} is mapped");
            };
            let start = vma.start();
            park();
            assert_eq!(vma.start(), start, "the VMA found stays intact");
        },
        || change(space),
    )
}

#[test]
fn munmap_does_not_wait_for_a_fault_on_another_vma() {
    let space = two_vmas();
    assert!(finishes_beside_fault(&space, BASE + P, |space| {
        space.munmap(BASE + 8 * P, 4 * P).unwrap();
    }));
}

#[test]
fn mprotect_does_not_wait_for_a_fault_on_another_vma() {
    let space = two_vmas();
    assert!(finishes_beside_fault(&space, BASE + P, |space| {
        space.mprotect(BASE + 9 * P, P, Prot::READ).unwrap();
    }));
}

#[test]
fn munmap_waits_for_a_fault_on_its_vma() {
    let space = two_vmas();
    assert!(!finishes_beside_fault(&space, BASE + P, |space| {
        space.munmap(BASE + 3 * P, P).unwrap();
    }));
}

const HUGE: u64 = 2 << 20;

/// The VMAs' ranges, from `maps()`.
fn ranges(space: &AddressSpace) -> Vec<(u64, u64)> {
    lines(space)
        .iter()
        .map(|line| {
            let range = line.split(' ').next().unwrap();
            let (start, end) = range.split_once('-').unwrap();
            (
                u64::from_str_radix(start, 16).unwrap(),
                u64::from_str_radix(end, 16).unwrap(),
            )
        })
        .collect()
}

#[test]
fn mappings_of_huge_pages_align_split_at_their_boundaries_and_never_merge() {
    let space = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    let huge: Arc<dyn MappedFile> = Arc::new(Special {
        page_size: HUGE,
        ..Special::new("/hugepages/f")
    });
    let shared = MapFlags::SHARED;
    let map = |addr: u64, len: u64, flags: MapFlags, offset: u64| {
        space.mmap(addr, len, Prot::READ_WRITE, flags, Some((huge.clone(), offset)))
    };
    // Linux's rules (ksys_mmap_pgoff, hugetlbfs_file_mmap): offset and fixed address at huge
    // page boundaries, the length rounded up to them.
    assert_eq!(
        errno(map(0, HUGE, shared, P)),
        Errno::EINVAL,
        "offset inside a huge page"
    );
    assert_eq!(
        errno(map(0x4000_0000 + P, HUGE, shared.fixed(), 0)),
        Errno::EINVAL
    );
    let a = map(0, P, shared, HUGE).unwrap();
    assert_eq!(a % HUGE, 0, "placed at a huge page boundary");
    assert!(ranges(&space).contains(&(a, a + HUGE)), "length rounded up");
    let hinted = map(0x4000_0000 + P, 2 * HUGE, shared, 0).unwrap();
    assert_eq!(hinted, 0x4000_0000 + HUGE, "a hint is rounded up to a huge page");
    // Adjacent mappings of the same file at contiguous offsets stay apart.
    let b = map(hinted + 2 * HUGE, HUGE, shared.fixed(), 2 * HUGE).unwrap();
    assert_eq!(space.vma_count(), 3, "huge mappings never merge");
    // Splits inside a huge page are EINVAL, at its boundaries fine.
    assert_eq!(errno(space.munmap(hinted, P)), Errno::EINVAL);
    assert_eq!(errno(space.munmap(hinted + P, HUGE)), Errno::EINVAL);
    assert_eq!(errno(space.mprotect(hinted, HUGE + P, Prot::READ)), Errno::EINVAL);
    let anon = MapFlags::PRIVATE_ANONYMOUS.fixed();
    assert_eq!(
        errno(space.mmap(hinted + HUGE - P, 2 * P, Prot::READ, anon, None)),
        Errno::EINVAL
    );
    assert_eq!(space.vma_count(), 3, "a refused call changes nothing");
    space.mprotect(hinted, HUGE, Prot::READ).unwrap();
    space.munmap(b, HUGE).unwrap();
    assert_eq!(space.vma_count(), 3, "split at the boundary");
    // mremap: lengths rounded up; no growth; addresses at huge page boundaries.
    let remap = |old, old_len, new_len, flags, new_addr| space.mremap(old, old_len, new_len, flags, new_addr);
    let none = RemapFlags::default();
    assert_eq!(
        errno(remap(a, HUGE, 2 * HUGE, none, 0)),
        Errno::EINVAL,
        "cannot grow"
    );
    assert_eq!(errno(remap(a + P, P, P, none, 0)), Errno::EINVAL);
    let fixed = RemapFlags {
        maymove: true,
        fixed: true,
    };
    assert_eq!(errno(remap(a, HUGE, HUGE, fixed, 0x6000_0000 + P)), Errno::EINVAL);
    assert_eq!(remap(a, P, P, fixed, 0x6000_0000), Ok(0x6000_0000), "moved whole");
    assert_eq!(
        remap(hinted, 2 * HUGE, P, none, 0),
        Ok(hinted),
        "shrunk to one huge page"
    );
    assert_eq!(
        ranges(&space),
        [
            (0x4000_0000 + HUGE, 0x4000_0000 + 2 * HUGE),
            (0x6000_0000, 0x6000_0000 + HUGE)
        ]
    );
    space.validate().unwrap();
}

/// The limits (checked against the running kernel in oracle/tests/limits.rs): brk stops at
/// RLIMIT_DATA and below a stack's guard gap, a stack stops growing at RLIMIT_AS, and the
/// usage follows every change.
#[test]
fn limits_stop_brk_and_stack_growth() {
    const BASE: u64 = 0x1000_0000;
    let s = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    s.set_heap_start(BASE).unwrap();
    s.set_limits(vma::Limits {
        data: 4 * P,
        ..vma::Limits::LINUX
    });
    assert_eq!(s.brk(BASE + 4 * P), BASE + 4 * P);
    assert_eq!(s.brk(BASE + 5 * P), BASE + 4 * P, "RLIMIT_DATA");
    assert_eq!(
        s.usage(),
        vma::Usage {
            total_pages: 4,
            data_pages: 4
        }
    );
    // A stack 300 pages above: brk stops a page short of its guard gap.
    let stack = BASE + 300 * P;
    let growsdown = MapFlags {
        growsdown: true,
        ..MapFlags::PRIVATE_ANONYMOUS.fixed()
    };
    s.mmap(stack, P, Prot::READ_WRITE, growsdown, None).unwrap();
    s.set_limits(vma::Limits::LINUX);
    let gap = stack - vma::STACK_GUARD_GAP;
    assert_eq!(s.brk(gap), BASE + 4 * P, "into the guard gap's last page");
    assert_eq!(s.brk(gap - P), gap - P);
    assert_eq!(
        s.usage(),
        vma::Usage {
            total_pages: 43 + 1,
            data_pages: 43
        }
    );
    // The stack grows while RLIMIT_AS allows.
    assert_eq!(s.brk(BASE + 4 * P), BASE + 4 * P);
    s.set_limits(vma::Limits {
        address_space: 7 * P,
        ..vma::Limits::LINUX
    });
    assert!(s.grow_stack(stack - P).unwrap());
    assert_eq!(errno(s.grow_stack(stack - 3 * P)), Errno::ENOMEM);
    assert!(s.grow_stack(stack - 2 * P).unwrap());
    assert_eq!(s.usage().total_pages, 7);
    s.validate().unwrap();
}

/// `maps()` prints what /proc/PID/maps prints, byte for byte (lines read off Linux 6.18): the
/// device and inode, names from column 74, a space ending a line without one, `[heap]`,
/// `[stack]`, `[anon:NAME]`, shared anonymous memory on device 00:01.
#[test]
fn maps_are_printed_as_linux_prints_them() {
    let s = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    let cat: Arc<dyn MappedFile> = Arc::new(Special {
        identity: vma::FileIdentity {
            major: 0xfe,
            minor: 0,
            inode: 247030,
        },
        ..Special::new("/usr/bin/cat")
    });
    let private = MapFlags::PRIVATE.fixed();
    s.mmap(0x55ed0c728000, 2 * P, Prot::READ, private, Some((cat, 0)))
        .unwrap();
    s.set_heap_start(0x55837f72d000).unwrap();
    s.brk(0x55837f74e000);
    let anon = MapFlags::PRIVATE_ANONYMOUS.fixed();
    s.mmap(0x7f47d85cc000, 0x22000, Prot::READ_WRITE, anon, None)
        .unwrap();
    s.mmap(0x7f47d8600000, 4 * P, Prot::READ_WRITE, anon, None)
        .unwrap();
    s.set_anon_name(0x7f47d8600000, 4 * P, Some("buf")).unwrap();
    s.mmap(0x7ffd1c000000, 0x21000, Prot::READ_WRITE, anon, None)
        .unwrap();
    s.set_stack_start(0x7ffd1c020000);
    let maps = s.maps();
    let lines: Vec<&str> = maps.lines().collect();
    assert_eq!(
        lines[0],
        "55837f72d000-55837f74e000 rw-p 00000000 00:00 0                          [heap]"
    );
    assert_eq!(
        lines[1],
        "55ed0c728000-55ed0c72a000 r--p 00000000 fe:00 247030                     /usr/bin/cat"
    );
    assert_eq!(lines[2], "7f47d85cc000-7f47d85ee000 rw-p 00000000 00:00 0 ");
    assert_eq!(
        lines[3],
        "7f47d8600000-7f47d8604000 rw-p 00000000 00:00 0                          [anon:buf]"
    );
    assert_eq!(
        lines[4],
        "7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]"
    );
    let shared = s
        .mmap(
            0x7f8a47d53000,
            2 * P,
            Prot::READ_WRITE,
            MapFlags::SHARED_ANONYMOUS.fixed(),
            None,
        )
        .unwrap();
    s.set_anon_name(shared, 2 * P, Some("shm")).unwrap();
    let maps = s.maps();
    let shm = maps
        .lines()
        .find(|line| line.starts_with("7f8a47d53000"))
        .unwrap();
    assert!(
        shm.starts_with("7f8a47d53000-7f8a47d55000 rw-s 00000000 00:01 "),
        "{shm}"
    );
    assert!(
        shm.ends_with("[anon_shmem:shm]") && shm.find('[') == Some(73),
        "{shm}"
    );
}

/// prctl(PR_SET_VMA_ANON_NAME), following mm/madvise.c and kernel/sys.c (the kernel the tests
/// run on lacks CONFIG_ANON_VMA_NAME, so no oracle checks it): names split and merge VMAs like
/// madvise flags, bad names are EINVAL, a file VMA stops the walk with EBADF, a hole answers
/// ENOMEM after naming the rest.
#[test]
fn anonymous_memory_is_named_as_prctl_names_it() {
    let s = space();
    anon(&s, BASE, 4, Prot::READ_WRITE);
    s.set_anon_name(BASE + P, 2 * P, Some("buf")).unwrap();
    assert_eq!(
        lines(&s),
        [
            "00020000-00021000 rw-p 00000000",
            "00021000-00023000 rw-p 00000000 [anon:buf]",
            "00023000-00024000 rw-p 00000000",
        ]
    );
    s.set_anon_name(BASE + P, 2 * P, None).unwrap();
    assert_eq!(
        lines(&s),
        ["00020000-00024000 rw-p 00000000"],
        "unnamed: merged again"
    );
    let long = "x".repeat(80);
    for bad in ["a[b", "a$", "tab\t", "back\\slash", "`", long.as_str()] {
        assert_eq!(
            errno(s.set_anon_name(BASE, P, Some(bad))),
            Errno::EINVAL,
            "{bad:?}"
        );
    }
    s.set_anon_name(BASE, P, Some(&long[..79])).unwrap();
    s.set_anon_name(BASE, P, Some("")).unwrap();
    assert_eq!(lines(&s)[0], "00020000-00021000 rw-p 00000000 [anon:]");
    assert_eq!(errno(s.set_anon_name(BASE + 1, P, Some("x"))), Errno::EINVAL);
    // A file after the anonymous memory: named up to it, then EBADF.
    s.mmap(
        BASE + 4 * P,
        P,
        Prot::READ,
        MapFlags::PRIVATE.fixed(),
        Some((file("/lib/a.so"), 0)),
    )
    .unwrap();
    anon(&s, BASE + 5 * P, 1, Prot::READ_WRITE);
    assert_eq!(errno(s.set_anon_name(BASE, 6 * P, Some("z"))), Errno::EBADF);
    let named = lines(&s);
    assert_eq!(named[0], "00020000-00024000 rw-p 00000000 [anon:z]");
    assert_eq!(named.last().unwrap(), "00025000-00026000 rw-p 00000000");
    // A hole: ENOMEM after naming what is mapped.
    s.munmap(BASE + 4 * P, P).unwrap();
    assert_eq!(errno(s.set_anon_name(BASE, 6 * P, Some("h"))), Errno::ENOMEM);
    assert_eq!(
        lines(&s),
        [
            "00020000-00024000 rw-p 00000000 [anon:h]",
            "00025000-00026000 rw-p 00000000 [anon:h]"
        ]
    );
}

/// The mmap flags beyond the common ones, with the errors Linux 6.18 answers (checked with raw
/// syscalls: fault/tests/kernel_oracle.rs and, for MAP_SYNC's filesystems, by hand): the
/// mapping types, MAP_SYNC, MAP_HUGETLB's sizes and objects, MAP_32BIT's placement.
#[test]
fn every_mmap_flag_has_its_linux_meaning() {
    let s = AddressSpace::new(Layout::X86_64, NoFlush).unwrap();
    let rw = Prot::READ_WRITE;
    let anon = MapFlags::PRIVATE_ANONYMOUS;
    let droppable = MapFlags {
        private: false,
        droppable: true,
        ..anon
    };
    for bad in [
        MapFlags {
            private: true,
            ..droppable
        },
        MapFlags {
            locked: true,
            ..droppable
        },
        MapFlags {
            growsdown: true,
            ..droppable
        },
        MapFlags {
            hugetlb: true,
            ..droppable
        },
        MapFlags {
            anonymous: false,
            ..droppable
        },
        MapFlags {
            hugetlb: true,
            huge_page_shift: 16,
            ..anon
        },
    ] {
        assert_eq!(
            errno(s.mmap(0, P, rw, bad, Some((file("/f"), 0)))),
            Errno::EINVAL,
            "{bad:?}"
        );
    }
    // MAP_DROPPABLE keeps apart from plain memory, is not charged (VM_NORESERVE).
    let a = s.mmap(0x10_0000_0000, P, rw, anon.fixed(), None).unwrap();
    s.mmap(a + P, P, rw, droppable.fixed(), None).unwrap();
    assert_eq!(s.vma_count(), 2);
    // MAP_SYNC: marked, so apart; EOPNOTSUPP with MAP_SHARED_VALIDATE and on a refusing file.
    s.mmap(a + 2 * P, P, rw, MapFlags { sync: true, ..anon }.fixed(), None)
        .unwrap();
    assert_eq!(s.vma_count(), 3);
    let validate = MapFlags {
        shared: true,
        private: true,
        anonymous: false,
        sync: true,
        ..anon
    };
    assert_eq!(
        errno(s.mmap(0, P, rw, validate, Some((file("/f"), 0)))),
        Errno::EOPNOTSUPP
    );
    let ext4: Arc<dyn MappedFile> = Arc::new(Special {
        refuses_sync: true,
        ..Special::new("/data/file")
    });
    let sync_private = MapFlags {
        anonymous: false,
        sync: true,
        ..anon
    };
    assert_eq!(
        errno(s.mmap(0, P, rw, sync_private, Some((ext4.clone(), 0)))),
        Errno::EOPNOTSUPP
    );
    s.mmap(0, P, rw, MapFlags::SHARED, Some((ext4, 0))).unwrap();
    // MAP_HUGETLB: anonymous memory of 2 MiB (or 1 GiB) pages, its length rounded up; with a
    // file not of huge pages, EINVAL.
    let huge = MapFlags {
        hugetlb: true,
        ..anon
    };
    let h = s.mmap(0, 3 << 20, rw, huge, None).unwrap();
    assert_eq!(h % (2 << 20), 0);
    let line = s
        .maps()
        .lines()
        .find(|l| l.starts_with(&format!("{h:x}")))
        .unwrap()
        .to_string();
    assert!(line.ends_with("/anon_hugepage (deleted)"), "{line}");
    assert!(
        line.starts_with(&format!("{h:x}-{:x} rw-p", h + (4 << 20))),
        "{line}"
    );
    let gib = s
        .mmap(
            0,
            P,
            rw,
            MapFlags {
                huge_page_shift: 30,
                ..huge
            },
            None,
        )
        .unwrap();
    assert_eq!(gib % (1 << 30), 0);
    let huge_file = MapFlags {
        anonymous: false,
        ..huge
    };
    assert_eq!(
        errno(s.mmap(0, P, rw, huge_file, Some((file("/f"), 0)))),
        Errno::EINVAL
    );
    // MAP_32BIT: below 2 GiB unless the hint is free.
    let low_32bit = MapFlags {
        low_32bit: true,
        ..anon
    };
    let low = s.mmap(0, P, rw, low_32bit, None).unwrap();
    assert!((1 << 30..2 << 30).contains(&low), "{low:#x}");
    assert_eq!(
        s.mmap(0x20_0000_0000, P, rw, low_32bit, None).unwrap(),
        0x20_0000_0000
    );
    s.validate().unwrap();
}
