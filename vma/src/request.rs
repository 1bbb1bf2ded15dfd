//! Argument checking for mmap, munmap and mprotect, shared by [`AddressSpace`] and by anyone
//! who implements the same calls another way (the benchmark's baseline designs): the same
//! input gets the same errno everywhere.
//!
//! [`AddressSpace`]: crate::AddressSpace

use crate::error::{Errno, Error, Result};
use crate::space::{Layout, MapFlags, RemapFlags, SharedAnonymous};
use crate::vma::{Backing, MappedFile, Mapping, Prot};
use crate::{PAGE_SHIFT, PAGE_SIZE};
use std::sync::Arc;

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

/// A checked mmap call: where it may go, how long it is, and what it maps.
#[derive(Debug, Clone)]
pub struct MmapRequest {
    /// Where the mapping may go (fixed addresses are checked against the layout).
    pub placement: Placement,
    /// Length in bytes, whole pages.
    pub len: u64,
    prot: Prot,
    shared: bool,
    backing: Backing,
    /// Page offset in a file (anonymous mappings take theirs from the address).
    file_pgoff: u64,
    growsdown: bool,
}

impl MmapRequest {
    /// Checks an mmap call as Linux does: EINVAL for an unaligned file offset or fixed address,
    /// a zero length, or a bad flag combination; EBADF for a file mapping without a file;
    /// ENOMEM for a fixed range above the space or a length overflowing when rounded; EPERM for
    /// a fixed address below the lowest usable one. `file` is the object and byte offset of a
    /// file mapping (ignored with `anonymous`, as Linux ignores the fd).
    pub fn new(
        layout: Layout,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(Arc<dyn MappedFile>, u64)>,
    ) -> Result<Self> {
        let offset = if flags.anonymous {
            0
        } else {
            file.as_ref().map_or(0, |(_, offset)| *offset)
        };
        if !aligned(offset) {
            return Err(einval("file offset not page aligned"));
        }
        if flags.shared == flags.private {
            return Err(einval("exactly one of MAP_SHARED and MAP_PRIVATE"));
        }
        if flags.growsdown && flags.shared {
            return Err(einval("MAP_GROWSDOWN cannot be shared"));
        }
        let backing = match (flags.anonymous, file) {
            (true, _) if flags.shared => Backing::File(Arc::new(SharedAnonymous)),
            (true, _) => Backing::Anonymous,
            (false, Some((file, _))) => Backing::File(file),
            (false, None) => return Err(Error::new(Errno::EBADF, "a file mapping needs a file")),
        };
        let len = page_len(len)?;
        let placement = if flags.fixed || flags.fixed_noreplace {
            if !aligned(addr) {
                return Err(einval("fixed address not page aligned"));
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
            placement,
            len,
            prot,
            shared: flags.shared,
            backing,
            file_pgoff: offset >> PAGE_SHIFT,
            growsdown: flags.growsdown,
        })
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
            accounted: !self.shared && self.prot.write,
            name: None,
        }
    }
}

/// Checks a munmap call: `[start, end)` with the length rounded up to pages; EINVAL for an
/// unaligned address, a zero length or a range beyond the space.
pub fn unmap_range(layout: Layout, addr: u64, len: u64) -> Result<(u64, u64)> {
    if !aligned(addr) {
        return Err(einval("address not page aligned"));
    }
    let len = page_len(len)?;
    if addr > layout.high || len > layout.high - addr {
        return Err(einval("range above the address space"));
    }
    Ok((addr, addr + len))
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
/// or `None` for a zero length (which does nothing); EINVAL for an unaligned address or a range
/// beyond the space (Linux's madvise answers EINVAL where mprotect answers ENOMEM).
pub fn advise_range(layout: Layout, addr: u64, len: u64) -> Result<Option<(u64, u64)>> {
    if !aligned(addr) {
        return Err(einval("address not page aligned"));
    }
    if len == 0 {
        return Ok(None);
    }
    let end = len
        .checked_next_multiple_of(PAGE_SIZE)
        .and_then(|len| addr.checked_add(len))
        .filter(|&end| end <= layout.high)
        .ok_or(einval("range beyond the address space"))?;
    Ok(Some((addr, end)))
}

/// A checked mremap call: the old range, the new length, and where a move must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemapRequest {
    /// Start of the old range.
    pub old: u64,
    /// Length of the old range, whole pages.
    pub old_len: u64,
    /// New length, whole pages.
    pub new_len: u64,
    /// MREMAP_MAYMOVE.
    pub maymove: bool,
    /// MREMAP_FIXED: the new address (checked: aligned, inside the space, not overlapping the
    /// old range).
    pub fixed: Option<u64>,
}

impl RemapRequest {
    /// Checks an mremap call as Linux does: EINVAL for MREMAP_FIXED without MREMAP_MAYMOVE, an
    /// unaligned address, a zero old length (duplicating shared mappings is not supported), a
    /// zero new length, or a fixed range that is unaligned, outside the space or overlapping
    /// the old one; EFAULT for an old range above the space; ENOMEM for a length overflowing
    /// when rounded.
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
        if old_len == 0 {
            return Err(einval(
                "old length 0 (duplicating shared mappings is not supported)",
            ));
        }
        let old_len = page_len(old_len)?;
        let new_len = page_len(new_len)?;
        if old.checked_add(old_len).is_none_or(|end| end > layout.high) {
            return Err(Error::new(Errno::EFAULT, "old range above the address space"));
        }
        let fixed = if flags.fixed {
            if !aligned(new_addr) {
                return Err(einval("new address not page aligned"));
            }
            if new_addr < layout.low || new_addr.checked_add(new_len).is_none_or(|end| end > layout.high) {
                return Err(einval("new range outside the address space"));
            }
            if new_addr < old + old_len && old < new_addr + new_len {
                return Err(einval("old and new ranges overlap"));
            }
            Some(new_addr)
        } else {
            None
        };
        Ok(Self {
            old,
            old_len,
            new_len,
            maymove: flags.maymove,
            fixed,
        })
    }
}
