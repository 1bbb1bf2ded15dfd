//! PROCMAP_QUERY, the `/proc/PID/maps` ioctl of Linux 6.11 on: the query's flags (with Linux's
//! bit values, so an ioctl emulation passes them through) and its answer.

use crate::error::Result;
use crate::maps::FileIdentity;
use crate::request::einval;
use crate::vma::{Mapping, Prot};

/// What a query asks for (Linux's `enum procmap_query_flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryFlags(u64);

impl QueryFlags {
    /// The VMA must be readable.
    pub const READABLE: QueryFlags = QueryFlags(0x01);
    /// The VMA must be writable.
    pub const WRITABLE: QueryFlags = QueryFlags(0x02);
    /// The VMA must be executable.
    pub const EXECUTABLE: QueryFlags = QueryFlags(0x04);
    /// The VMA must be shared (Linux's `VM_MAYSHARE`: MAP_SHARED).
    pub const SHARED: QueryFlags = QueryFlags(0x08);
    /// The VMA covering the address, or else the first after it.
    pub const COVERING_OR_NEXT: QueryFlags = QueryFlags(0x10);
    /// The VMA must map a file.
    pub const FILE_BACKED: QueryFlags = QueryFlags(0x20);

    /// Flags from Linux's bits; EINVAL for a bit Linux does not define.
    pub fn from_bits(bits: u64) -> Result<Self> {
        if bits & !0x3f != 0 {
            return Err(einval("unknown PROCMAP_QUERY flag"));
        }
        Ok(Self(bits))
    }

    /// Linux's bits.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: QueryFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `mapping` passes the filters (permissions, sharing, file).
    pub(crate) fn matches(self, mapping: &Mapping) -> bool {
        let wants = |flag| self.contains(flag);
        (!wants(Self::READABLE) || mapping.prot.read)
            && (!wants(Self::WRITABLE) || mapping.prot.write)
            && (!wants(Self::EXECUTABLE) || mapping.prot.exec)
            && (!wants(Self::SHARED) || mapping.shared)
            && (!wants(Self::FILE_BACKED) || mapping.backing.file().is_some())
    }
}

impl std::ops::BitOr for QueryFlags {
    type Output = QueryFlags;

    fn bitor(self, other: QueryFlags) -> QueryFlags {
        QueryFlags(self.0 | other.0)
    }
}

/// A query's answer (Linux's `struct procmap_query` out fields; no build ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaInfo {
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// Permissions.
    pub prot: Prot,
    /// MAP_SHARED.
    pub shared: bool,
    /// The page size of what it maps (`vma_kernel_pagesize`).
    pub page_size: u64,
    /// Byte offset in the mapped object (0 for anonymous memory).
    pub offset: u64,
    /// Device and inode of the object.
    pub identity: FileIdentity,
    /// The name `maps()` shows (empty for none).
    pub name: String,
}
