//! Argument checking for mmap, munmap, mprotect, mremap and madvise, shared by
//! [`AddressSpace`] and by anyone who implements the same calls another way (the benchmark's
//! baseline designs): the same input gets the same errno everywhere, Linux's (6.18, checked
//! against the running kernel by `fault/tests/kernel_oracle.rs`). Requests are built only by
//! their checking constructors, so an unchecked one cannot reach the address space.
//!
//! [`AddressSpace`]: crate::AddressSpace

use crate::error::{Errno, Error, Result};
use crate::vma::{AnonSlot, Backing, HugeAnonymous, MappedFile, Mapping, Prot, SharedAnonymous};
use crate::{PAGE_SHIFT, PAGE_SIZE};
use std::sync::Arc;

/// The bounds of an address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Lowest usable address (Linux's `mmap_min_addr`).
    pub low: u64,
    /// One past the highest usable address (Linux's `TASK_SIZE`).
    pub high: u64,
    /// Top-down placement searches below this address first.
    pub mmap_base: u64,
}

impl Default for Layout {
    /// [`Layout::X86_64`].
    fn default() -> Self {
        Self::X86_64
    }
}

impl Layout {
    /// EINVAL unless the bounds are page aligned with `low < high` and `low <= mmap_base <=
    /// high` (what [`AddressSpace::new`](crate::AddressSpace::new) requires).
    pub fn check(self) -> Result<()> {
        let Layout { low, high, mmap_base } = self;
        if [low, high, mmap_base].iter().any(|bound| bound % PAGE_SIZE != 0) {
            return Err(Error::new(Errno::EINVAL, "layout bounds must be page aligned"));
        }
        if !(low < high && low <= mmap_base && mmap_base <= high) {
            return Err(Error::new(
                Errno::EINVAL,
                "layout needs low < high and low <= mmap_base <= high",
            ));
        }
        Ok(())
    }

    /// x86-64 user space with 4-level page tables: `[0x10000, 0x7ffffffff000)`, mmap base at
    /// 0x7f0000000000.
    pub const X86_64: Layout = Layout {
        low: 0x1_0000,
        high: 0x7fff_ffff_f000,
        mmap_base: 0x7f00_0000_0000,
    };
}

/// mmap flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapFlags {
    /// MAP_SHARED.
    pub shared: bool,
    /// MAP_PRIVATE.
    pub private: bool,
    /// MAP_ANONYMOUS.
    pub anonymous: bool,
    /// MAP_FIXED: replace whatever is there.
    pub fixed: bool,
    /// MAP_FIXED_NOREPLACE: fail with EEXIST if anything is there.
    pub fixed_noreplace: bool,
    /// MAP_GROWSDOWN.
    pub growsdown: bool,
    /// MAP_POPULATE: fault the pages in at once (the layer with page tables does; the VMAs are
    /// the same either way).
    pub populate: bool,
    /// MAP_NORESERVE: not charged to the commit limit (Linux's VM_NORESERVE, no VM_ACCOUNT).
    pub noreserve: bool,
    /// MAP_STACK: a thread stack, which Linux 6.7 on keeps out of transparent huge pages
    /// (VM_NOHUGEPAGE).
    pub stack: bool,
    /// MAP_LOCKED: locked as by mlock (VM_LOCKED), its pages faulted in at once.
    pub locked: bool,
    /// MAP_32BIT (x86-64): a placement not fixed goes in `[1 GiB, 2 GiB)` if the hint is not
    /// free (Linux's `find_start_end`, bottom-up; Linux also randomizes the start by up to
    /// 32 MiB).
    pub low_32bit: bool,
    /// MAP_HUGETLB: anonymous memory of huge pages (a hugetlbfs object of its own, shown as
    /// `/anon_hugepage (deleted)`); with a file, only a hugetlb file's mapping may have it.
    pub hugetlb: bool,
    /// MAP_HUGE_2MB / MAP_HUGE_1GB: the huge page size of MAP_HUGETLB, as log2 of bytes (the
    /// bits at `MAP_HUGE_SHIFT`); 0 for the default, 2 MiB. Other sizes are EINVAL on x86-64.
    pub huge_page_shift: u32,
    /// MAP_SYNC: EOPNOTSUPP with MAP_SHARED_VALIDATE (no object here is on a DAX device) and
    /// for a file that refuses it ([`MappedFile::refuses_sync`]); otherwise the mapping is
    /// marked (Linux's VM_SYNC) and merges only with mappings marked so.
    pub sync: bool,
    /// MAP_DROPPABLE (Linux 6.11): private anonymous memory whose pages memory pressure may
    /// drop (they read back as zeros), not copied by fork, not reserved (VM_DROPPABLE,
    /// VM_WIPEONFORK, VM_DONTDUMP, VM_NORESERVE). A mapping type: not with MAP_SHARED or
    /// MAP_PRIVATE, nor with a file, MAP_LOCKED, MAP_HUGETLB or MAP_GROWSDOWN (EINVAL).
    pub droppable: bool,
}

impl MapFlags {
    /// MAP_PRIVATE | MAP_ANONYMOUS.
    pub const PRIVATE_ANONYMOUS: MapFlags = MapFlags {
        shared: false,
        private: true,
        anonymous: true,
        fixed: false,
        fixed_noreplace: false,
        growsdown: false,
        populate: false,
        noreserve: false,
        stack: false,
        locked: false,
        low_32bit: false,
        hugetlb: false,
        huge_page_shift: 0,
        sync: false,
        droppable: false,
    };
    /// MAP_PRIVATE (a file mapping).
    pub const PRIVATE: MapFlags = MapFlags {
        anonymous: false,
        ..Self::PRIVATE_ANONYMOUS
    };
    /// MAP_SHARED (a file mapping).
    pub const SHARED: MapFlags = MapFlags {
        shared: true,
        private: false,
        ..Self::PRIVATE
    };
    /// MAP_SHARED | MAP_ANONYMOUS: memory shared with the mappings this one is moved or
    /// (later) forked to, zero-filled.
    pub const SHARED_ANONYMOUS: MapFlags = MapFlags {
        anonymous: true,
        ..Self::SHARED
    };

    /// Checks the combination as Linux's mmap does: EINVAL unless exactly one mapping type is
    /// set — MAP_SHARED, MAP_PRIVATE, MAP_DROPPABLE, or MAP_SHARED and MAP_PRIVATE together,
    /// which are MAP_SHARED_VALIDATE: a file mapped shared, EINVAL for anonymous memory,
    /// EOPNOTSUPP with MAP_SYNC (the one flag here it does not know for these objects);
    /// EINVAL for MAP_GROWSDOWN with MAP_SHARED, for MAP_DROPPABLE with a file, MAP_LOCKED,
    /// MAP_HUGETLB or MAP_GROWSDOWN, and for a huge page size x86-64 does not have. Returns
    /// whether the mapping is shared.
    pub fn check(self) -> Result<bool> {
        if self.hugetlb && self.huge_page_size().is_none() {
            return Err(einval("no such huge page size"));
        }
        match (self.shared, self.private, self.droppable) {
            (false, false, false) => Err(einval("one of MAP_SHARED and MAP_PRIVATE is needed")),
            (_, _, true) if self.shared || self.private => {
                Err(einval("MAP_DROPPABLE is a mapping type of its own"))
            }
            (_, _, true) if !self.anonymous || self.locked || self.hugetlb || self.growsdown => Err(einval(
                "MAP_DROPPABLE maps anonymous memory, unlocked, not huge, not a stack",
            )),
            (true, true, _) if self.anonymous => {
                Err(einval("MAP_SHARED_VALIDATE does not map anonymous memory"))
            }
            (true, true, _) if self.sync => Err(Error::new(
                Errno::EOPNOTSUPP,
                "MAP_SYNC needs an object on a DAX device",
            )),
            _ if self.growsdown && self.shared => Err(einval("MAP_GROWSDOWN cannot be shared")),
            (shared, _, _) => Ok(shared),
        }
    }

    /// The huge page size MAP_HUGETLB asks for: 2 MiB by default or with MAP_HUGE_2MB, 1 GiB
    /// with MAP_HUGE_1GB; `None` for another size (x86-64 has no other).
    pub fn huge_page_size(self) -> Option<u64> {
        match self.huge_page_shift {
            0 | 21 => Some(2 << 20),
            30 => Some(1 << 30),
            _ => None,
        }
    }

    /// The same flags with MAP_FIXED.
    pub const fn fixed(self) -> Self {
        Self { fixed: true, ..self }
    }

    /// The same flags with MAP_FIXED_NOREPLACE.
    pub const fn fixed_noreplace(self) -> Self {
        Self {
            fixed_noreplace: true,
            ..self
        }
    }
}

/// mremap flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RemapFlags {
    /// MREMAP_MAYMOVE.
    pub maymove: bool,
    /// MREMAP_FIXED (requires `maymove`).
    pub fixed: bool,
}

pub(crate) fn einval(reason: &'static str) -> Error {
    Error::new(Errno::EINVAL, reason)
}

pub(crate) fn enomem(reason: &'static str) -> Error {
    Error::new(Errno::ENOMEM, reason)
}

pub(crate) fn aligned(value: u64) -> bool {
    value % PAGE_SIZE == 0
}

/// `len` rounded up to whole pages: EINVAL if zero, ENOMEM if rounding overflows.
pub(crate) fn page_len(len: u64) -> Result<u64> {
    if len == 0 {
        return Err(einval("zero length"));
    }
    len.checked_next_multiple_of(PAGE_SIZE)
        .ok_or(enomem("length overflows when rounded to pages"))
}

/// Where an mmap may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Anywhere free; at the hint (rounded up to a page) if that range is free.
    Hint(u64),
    /// Exactly at the address, replacing what is there (MAP_FIXED).
    Fixed(u64),
    /// Exactly at the address, or EEXIST if anything is there (MAP_FIXED_NOREPLACE).
    FixedNoReplace(u64),
}

/// A checked mmap call: where it may go, how long it is, and what it maps. Only
/// [`MmapRequest::new`] makes one, so every request is valid for the layout it was checked
/// against (and [`crate::AddressSpace::map`] takes only requests checked against its own):
///
/// ```compile_fail
/// use vma::{Layout, MapFlags, Prot, request::MmapRequest};
/// let flags = MapFlags::PRIVATE_ANONYMOUS;
/// let mut request = MmapRequest::new(Layout::X86_64, 0, 4096, Prot::READ, flags, None).unwrap();
/// request.len = 0; // the fields are private: a checked request stays as checked
/// ```
#[derive(Debug, Clone)]
pub struct MmapRequest {
    layout: Layout,
    placement: Placement,
    len: u64,
    prot: Prot,
    shared: bool,
    backing: Backing,
    /// Page offset in a file (anonymous mappings take theirs from the address).
    file_pgoff: u64,
    growsdown: bool,
    /// MAP_NORESERVE (or MAP_DROPPABLE), MAP_STACK, MAP_LOCKED, MAP_32BIT and MAP_DROPPABLE
    /// (see [`MapFlags`]).
    noreserve: bool,
    stack: bool,
    locked: bool,
    low_32bit: bool,
    droppable: bool,
    sync: bool,
    /// The page size of what is mapped: the start is a multiple of it.
    align: u64,
}

/// EINVAL if `at` lies inside `mapping` at an address its page size does not divide: a
/// mapping of huge pages splits only at their boundaries (Linux's `hugetlb_vm_op_split`).
fn check_split(mapping: Option<&Mapping>, at: u64) -> Result<()> {
    match mapping {
        Some(m) if m.start < at && at < m.end && at % m.page_size() != 0 => {
            Err(einval("the range splits a mapping of huge pages inside a page"))
        }
        _ => Ok(()),
    }
}

/// EINVAL if changing `[start, end)` would split `at_start` (the mapping holding `start`) or
/// `at_end` (the one holding `end - 1`) inside one of its pages (see [`Mapping::page_size`]).
/// munmap, mprotect, mremap and a fixed mmap check this before they change anything.
pub fn check_splits(
    start: u64,
    end: u64,
    at_start: Option<&Mapping>,
    at_end: Option<&Mapping>,
) -> Result<()> {
    check_split(at_start, start)?;
    check_split(at_end, end)
}

impl MmapRequest {
    /// Checks an mmap call as Linux (x86-64) does: EINVAL for an unaligned offset (anonymous
    /// mappings included) or fixed address, a zero length, or a bad flag combination; EBADF
    /// for a file mapping without a file; ENOMEM for a fixed range above the space or a length
    /// overflowing when rounded (a length longer than the space fails with ENOMEM when it is
    /// placed); EPERM for a fixed address below the lowest usable one. `file` is the object
    /// and byte offset of a file mapping (the object is ignored with `anonymous`, as Linux
    /// ignores the fd).
    pub fn new(
        layout: Layout,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(Arc<dyn MappedFile>, u64)>,
    ) -> Result<Self> {
        if file.as_ref().is_some_and(|&(_, offset)| !aligned(offset)) {
            return Err(einval("offset not page aligned"));
        }
        let shared = flags.check()?;
        // A file of huge pages: Linux rounds the length up to them and requires the offset
        // and a fixed address at their boundaries. MAP_HUGETLB maps anonymous memory of huge
        // pages, and with a file only a hugetlb one.
        let align = match (&file, flags.anonymous) {
            (Some((file, _)), false) => file.page_size(),
            (None, false) => PAGE_SIZE,
            (_, true) if flags.hugetlb => flags.huge_page_size().expect("checked"),
            (_, true) => PAGE_SIZE,
        };
        if flags.hugetlb && !flags.anonymous && align == PAGE_SIZE {
            return Err(einval("MAP_HUGETLB with a file not of huge pages"));
        }
        if flags.sync && !flags.anonymous && file.as_ref().is_some_and(|(file, _)| file.refuses_sync()) {
            return Err(Error::new(
                Errno::EOPNOTSUPP,
                "MAP_SYNC needs a file on a DAX device",
            ));
        }
        if file.as_ref().is_some_and(|&(_, offset)| offset % align != 0) && !flags.anonymous {
            return Err(einval("offset not aligned to the file's huge pages"));
        }
        let offset = if flags.anonymous {
            0
        } else {
            file.as_ref().map_or(0, |(_, offset)| *offset)
        };
        let backing = match (flags.anonymous, file) {
            (true, _) if flags.hugetlb => Backing::File(Arc::new(HugeAnonymous::new(align))),
            (true, _) if shared => Backing::File(Arc::new(SharedAnonymous::new())),
            (true, _) => Backing::Anonymous,
            (false, Some((file, _))) => Backing::File(file),
            (false, None) => return Err(Error::new(Errno::EBADF, "a file mapping needs a file")),
        };
        let len = page_len(len)?
            .checked_next_multiple_of(align)
            .ok_or(enomem("length overflows when rounded to huge pages"))?;
        let placement = if flags.fixed || flags.fixed_noreplace {
            if addr % align != 0 {
                return Err(einval("fixed address not aligned to the mapping's pages"));
            }
            if addr.checked_add(len).is_none_or(|end| end > layout.high) {
                return Err(enomem("fixed range above the address space"));
            }
            if addr < layout.low {
                return Err(Error::new(
                    Errno::EPERM,
                    "fixed address below the lowest usable address",
                ));
            }
            if flags.fixed_noreplace {
                Placement::FixedNoReplace(addr)
            } else {
                Placement::Fixed(addr)
            }
        } else {
            Placement::Hint(addr)
        };
        // 64-bit byte offsets and lengths in pages cannot overflow a page offset (Linux's
        // EOVERFLOW check never fires on 64-bit).
        Ok(Self {
            layout,
            placement,
            len,
            prot,
            shared,
            backing,
            file_pgoff: offset >> PAGE_SHIFT,
            growsdown: flags.growsdown,
            noreserve: flags.noreserve || flags.droppable,
            stack: flags.stack,
            locked: flags.locked,
            low_32bit: flags.low_32bit,
            droppable: flags.droppable,
            sync: flags.sync,
            align,
        })
    }

    /// What the start must be a multiple of: the mapped file's page size.
    pub fn alignment(&self) -> u64 {
        self.align
    }

    /// The layout the request was checked against.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Whether a placement not fixed goes below 2 GiB (MAP_32BIT).
    pub fn low_32bit(&self) -> bool {
        self.low_32bit
    }

    /// Where the mapping may go (fixed ranges lie inside the layout).
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Length in bytes, whole pages (not zero).
    pub fn length(&self) -> u64 {
        self.len
    }

    /// The mapping this request makes when placed at `start`.
    pub fn mapping_at(&self, start: u64) -> Mapping {
        let pgoff = match self.backing {
            Backing::Anonymous => start >> PAGE_SHIFT,
            Backing::File(_) => self.file_pgoff,
        };
        Mapping {
            start,
            end: start + self.len,
            prot: self.prot,
            shared: self.shared,
            backing: self.backing.clone(),
            pgoff,
            growsdown: self.growsdown,
            // Linux's `accountable_mapping`: private, writable, not MAP_NORESERVE, not of huge
            // pages.
            accounted: !self.shared && self.prot.write && !self.noreserve && self.align == PAGE_SIZE,
            name: None,
            dontfork: false,
            // Mappings of huge pages are never locked (as mlock leaves them).
            locked: self.locked && self.align == PAGE_SIZE,
            noreserve: self.noreserve,
            nohugepage: self.stack,
            droppable: self.droppable,
            sync: self.sync,
            anon: AnonSlot::default(),
        }
    }
}

/// Checks a munmap call as Linux does: `[start, end)` with the length rounded up to pages;
/// EINVAL for an unaligned address, a zero length, or a range beyond the space (checked before
/// rounding, so a length within a page of `u64::MAX` is EINVAL too).
pub fn unmap_range(layout: Layout, addr: u64, len: u64) -> Result<(u64, u64)> {
    if !aligned(addr) {
        return Err(einval("address not page aligned"));
    }
    if addr > layout.high || len > layout.high - addr {
        return Err(einval("range beyond the address space"));
    }
    if len == 0 {
        return Err(einval("zero length"));
    }
    // Cannot overflow: the layout's bounds are page aligned.
    Ok((addr, addr + len.next_multiple_of(PAGE_SIZE)))
}

/// Checks an mprotect call: `[start, end)` with the length rounded up to pages, or `None` for a
/// zero length (which does nothing); EINVAL for an unaligned address, ENOMEM for a range beyond
/// the space.
pub fn protect_range(layout: Layout, addr: u64, len: u64) -> Result<Option<(u64, u64)>> {
    if !aligned(addr) {
        return Err(einval("address not page aligned"));
    }
    if len == 0 {
        return Ok(None);
    }
    let len = page_len(len)?;
    let end = addr
        .checked_add(len)
        .filter(|&end| end <= layout.high)
        .ok_or(enomem("range above the address space"))?;
    Ok(Some((addr, end)))
}

/// Checks an madvise call (MADV_DONTNEED): `[start, end)` with the length rounded up to pages,
/// or `None` for a zero length (which does nothing); EINVAL for an unaligned address, or a
/// length that overflows when rounded or added to the address. As Linux, a range beyond the
/// space is not an error here: nothing is mapped there, so the call answers ENOMEM after
/// dropping what is mapped.
pub fn advise_range(addr: u64, len: u64) -> Result<Option<(u64, u64)>> {
    if !aligned(addr) {
        return Err(einval("address not page aligned"));
    }
    if len == 0 {
        return Ok(None);
    }
    let end = len
        .checked_next_multiple_of(PAGE_SIZE)
        .and_then(|len| addr.checked_add(len))
        .ok_or(einval("range wraps around the top of the address range"))?;
    Ok(Some((addr, end)))
}

/// The part of `[from, to)` (inside `mapping`) that MADV_DONTNEED drops: all of it, but EINVAL
/// for locked memory (mlock), and in a mapping of huge pages EINVAL unless `from` is at a
/// huge-page boundary, and the end rounded
/// down to one (Linux's `madvise_dontneed_free_valid_vma`: callers may not know that the
/// mapping uses huge pages, and rounding down loses no data). The part may be empty.
pub fn dontneed_part(mapping: &Mapping, from: u64, to: u64) -> Result<(u64, u64)> {
    if mapping.locked {
        return Err(einval("MADV_DONTNEED of locked memory"));
    }
    let huge = mapping.page_size();
    if from % huge != 0 {
        return Err(einval("MADV_DONTNEED inside a huge page"));
    }
    Ok((from, (to / huge * huge).max(from)))
}

/// A checked mremap call: the old range, the new length, and where a move must go. Only
/// [`RemapRequest::new`] makes one; the checks that depend on what is mapped are
/// [`RemapRequest::check_source`]'s. A move onto its own source, a zero length or a range that
/// wraps around cannot reach [`crate::AddressSpace::remap`]:
///
/// ```compile_fail
/// // No request without its checks: the fields are private.
/// let request = vma::request::RemapRequest {
///     old: 0x10000, old_len: 0, new_len: 0, maymove: true, fixed: Some(0x10000),
/// };
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemapRequest {
    layout: Layout,
    old: u64,
    old_len: u64,
    new_len: u64,
    maymove: bool,
    fixed: Option<u64>,
}

impl RemapRequest {
    /// Checks an mremap call's arguments as Linux (6.18) does before it looks at the mappings:
    /// EINVAL for MREMAP_FIXED without MREMAP_MAYMOVE, an unaligned address, a length that
    /// overflows when rounded, a zero new length or one longer than the space, or a fixed
    /// range that is unaligned, outside the space or overlapping the old one.
    pub fn new(
        layout: Layout,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> Result<Self> {
        if flags.fixed && !flags.maymove {
            return Err(einval("MREMAP_FIXED requires MREMAP_MAYMOVE"));
        }
        if !aligned(old) {
            return Err(einval("old address not page aligned"));
        }
        let rounded = |len: u64| {
            len.checked_next_multiple_of(PAGE_SIZE)
                .ok_or(einval("length overflows when rounded to pages"))
        };
        let old_len = rounded(old_len)?;
        let new_len = rounded(new_len)?;
        if new_len == 0 {
            return Err(einval("zero new length"));
        }
        if new_len > layout.high {
            return Err(einval("new length longer than the address space"));
        }
        let fixed = if flags.fixed {
            if !aligned(new_addr) {
                return Err(einval("new address not page aligned"));
            }
            if new_addr < layout.low || new_addr > layout.high - new_len {
                return Err(einval("new range outside the address space"));
            }
            if new_addr < old.saturating_add(old_len) && old < new_addr + new_len {
                return Err(einval("old and new ranges overlap"));
            }
            Some(new_addr)
        } else {
            None
        };
        Ok(Self {
            layout,
            old,
            old_len,
            new_len,
            maymove: flags.maymove,
            fixed,
        })
    }

    /// The layout the request was checked against.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Start of the old range.
    pub fn old(&self) -> u64 {
        self.old
    }

    /// Length of the old range, whole pages.
    pub fn old_len(&self) -> u64 {
        self.old_len
    }

    /// New length, whole pages (not zero).
    pub fn new_len(&self) -> u64 {
        self.new_len
    }

    /// The length of the part that stays mapped (and moves, in a move).
    pub fn kept(&self) -> u64 {
        self.old_len.min(self.new_len)
    }

    /// MREMAP_MAYMOVE.
    pub fn maymove(&self) -> bool {
        self.maymove
    }

    /// MREMAP_FIXED's new address.
    pub fn fixed(&self) -> Option<u64> {
        self.fixed
    }

    /// The checks Linux makes once it has looked up the old address, given `at_old`, the
    /// mapping covering it: EFAULT if there is none; EINVAL for a zero old length (duplicating
    /// shared mappings is not supported) or an old range beyond the space; EFAULT if the part
    /// that must lie in one mapping does not. That part is the whole old range when growing,
    /// the part kept in a fixed move that changes the size, and nothing more than `old` when
    /// shrinking or keeping the size in place, or in a fixed move of the same size (which may
    /// span several mappings and holes). A mapping of huge pages (Linux 6.18's
    /// `check_prep_vma`) has both lengths rounded up to its pages, needs the old and a fixed new
    /// address at their boundaries (EINVAL) and cannot grow (EINVAL). Returns the request as
    /// it is carried out (the lengths rounded).
    pub fn check_source(&self, at_old: Option<&Mapping>) -> Result<RemapRequest> {
        let at_old = at_old.ok_or(Error::new(Errno::EFAULT, "nothing is mapped at the old address"))?;
        let huge = at_old.page_size();
        let mut request = *self;
        if huge != PAGE_SIZE {
            let rounded = |len: u64| {
                len.checked_next_multiple_of(huge)
                    .ok_or(einval("length overflows when rounded to huge pages"))
            };
            (request.old_len, request.new_len) = (rounded(self.old_len)?, rounded(self.new_len)?);
            if self.old % huge != 0 || self.fixed.is_some_and(|new_addr| new_addr % huge != 0) {
                return Err(einval("addresses not aligned to the mapping's huge pages"));
            }
            if request.new_len > request.old_len {
                return Err(einval("a mapping of huge pages cannot grow"));
            }
        }
        request.check_mapped(at_old)?;
        Ok(request)
    }

    fn check_mapped(&self, at_old: &Mapping) -> Result<()> {
        if self.old_len == 0 {
            return Err(einval(
                "old length 0 (duplicating shared mappings is not supported)",
            ));
        }
        if self.old > self.layout.high || self.old_len > self.layout.high - self.old {
            return Err(einval("old range beyond the address space"));
        }
        let in_one_mapping = match self.fixed {
            Some(_) if self.new_len == self.old_len => 0,
            Some(_) => self.kept(),
            None if self.new_len > self.old_len => self.old_len,
            None => 0,
        };
        if self.old + in_one_mapping > at_old.end {
            return Err(Error::new(
                Errno::EFAULT,
                "the old range is not inside one mapping",
            ));
        }
        Ok(())
    }

    /// The mappings a move to `target` makes of `sources`, the mappings intersecting the part
    /// kept (in order): each piece at the same offset from `target` as from `old`, with its
    /// page offset; growing (one source) extends the last to the new length.
    pub fn moved(&self, sources: &[Mapping], target: u64) -> Vec<Mapping> {
        let kept_end = self.old + self.kept();
        let mut moved: Vec<Mapping> = sources
            .iter()
            .filter(|source| source.start < kept_end && self.old < source.end)
            .map(|source| {
                let piece = source.slice(source.start.max(self.old), source.end.min(kept_end));
                Mapping {
                    start: piece.start - self.old + target,
                    end: piece.end - self.old + target,
                    ..piece
                }
            })
            .collect();
        if let Some(last) = moved.last_mut()
            && self.new_len > self.old_len
        {
            last.end = target + self.new_len;
        }
        moved
    }
}
