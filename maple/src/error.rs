//! Errors of the maple tree's API.

use std::fmt;

/// Why a tree operation refused its input. Nothing was changed when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapleError {
    /// `first > last`: the range is empty.
    InvalidRange {
        /// The range's first index.
        first: u64,
        /// The range's last index.
        last: u64,
    },
    /// A gap search asked for zero indices.
    ZeroSize,
    /// `replace_exact` would cut the existing range `[first, last]`, which sticks out of the
    /// range being replaced.
    CutsRange {
        /// First index of the range that sticks out.
        first: u64,
        /// Last index of the range that sticks out.
        last: u64,
    },
    /// `insert_range` found part of its range occupied by the range `[first, last]`.
    Occupied {
        /// First index of the occupying range.
        first: u64,
        /// Last index of the occupying range.
        last: u64,
    },
}

impl fmt::Display for MapleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::InvalidRange { first, last } => {
                write!(f, "invalid range [{first:#x}, {last:#x}]: first is above last")
            }
            Self::ZeroSize => write!(f, "a gap search needs a size of at least one index"),
            Self::CutsRange { first, last } => {
                write!(
                    f,
                    "the range [{first:#x}, {last:#x}] sticks out of the range to replace"
                )
            }
            Self::Occupied { first, last } => {
                write!(f, "the range is occupied by [{first:#x}, {last:#x}]")
            }
        }
    }
}

impl std::error::Error for MapleError {}

/// Checks `first <= last`.
pub(crate) fn check_range(first: u64, last: u64) -> Result<(), MapleError> {
    if first > last {
        Err(MapleError::InvalidRange { first, last })
    } else {
        Ok(())
    }
}
