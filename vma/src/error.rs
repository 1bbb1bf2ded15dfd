//! Errors of the address-space operations, each naming the errno Linux returns in that case.

use std::fmt;

/// The Linux errno an operation failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Invalid argument: unaligned address, zero length, bad flag combination.
    EINVAL,
    /// Out of address space, or (mprotect) part of the range is not mapped.
    ENOMEM,
    /// MAP_FIXED_NOREPLACE found the range occupied.
    EEXIST,
    /// A fixed mapping below the lowest usable address.
    EPERM,
    /// mremap: the old range is not inside one mapping.
    EFAULT,
    /// A file mapping without a file.
    EBADF,
    /// A file size or offset beyond the largest file.
    EFBIG,
    /// The storage below a file failed (writeback).
    EIO,
    /// Permission denied: MADV_REMOVE of a private file mapping.
    EACCES,
    /// No such VMA (PROCMAP_QUERY).
    ENOENT,
    /// MAP_SYNC with MAP_SHARED_VALIDATE on an object not on a DAX device.
    EOPNOTSUPP,
    /// madvise could not split a VMA (Linux answers EAGAIN where the split's ENOMEM would be).
    EAGAIN,
    /// The object cannot be mapped that way (a shared mapping of memory served through
    /// userfaultfd, as Linux answers for a file system that cannot map a file).
    ENODEV,
}

impl Errno {
    /// The positive errno value on Linux (x86-64).
    pub fn code(self) -> i32 {
        match self {
            Self::EPERM => 1,
            Self::ENOENT => 2,
            Self::EIO => 5,
            Self::EAGAIN => 11,
            Self::EBADF => 9,
            Self::ENOMEM => 12,
            Self::EACCES => 13,
            Self::EFAULT => 14,
            Self::EEXIST => 17,
            Self::ENODEV => 19,
            Self::EINVAL => 22,
            Self::EFBIG => 27,
            Self::EOPNOTSUPP => 95,
        }
    }

    /// The errno for a name such as `ENOMEM`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "EINVAL" => Self::EINVAL,
            "ENOMEM" => Self::ENOMEM,
            "EEXIST" => Self::EEXIST,
            "EPERM" => Self::EPERM,
            "EFAULT" => Self::EFAULT,
            "EBADF" => Self::EBADF,
            "EFBIG" => Self::EFBIG,
            "EIO" => Self::EIO,
            "EACCES" => Self::EACCES,
            "EAGAIN" => Self::EAGAIN,
            "ENOENT" => Self::ENOENT,
            "EOPNOTSUPP" => Self::EOPNOTSUPP,
            "ENODEV" => Self::ENODEV,
            _ => return None,
        })
    }
}

impl fmt::Display for Errno {
    /// The errno's name, as `strerrorname_np` gives it (`ENOMEM`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why an address-space operation failed; nothing changed unless the operation says otherwise
/// (mprotect, like Linux, keeps the changes made before the hole it stopped at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// What Linux returns.
    pub errno: Errno,
    /// Which check failed.
    pub reason: &'static str,
}

impl Error {
    /// An error with its errno and the reason (layers above report their own checks this way).
    pub const fn new(errno: Errno, reason: &'static str) -> Self {
        Self { errno, reason }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.errno, self.reason)
    }
}

impl std::error::Error for Error {}

/// Result of an address-space operation.
pub type Result<T> = std::result::Result<T, Error>;
