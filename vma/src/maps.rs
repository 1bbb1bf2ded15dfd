//! Lines of maps text exactly as Linux's `/proc/PID/maps` prints them (`show_map_vma`):
//! `start-end perms offset major:minor inode`, then, for a mapping with a name, spaces up to
//! column 73 and the name; a mapping without one ends with a space after its inode.

use crate::vma::Prot;
use std::fmt;

/// The device and inode of a mapped object, as `/proc/PID/maps` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Major device number.
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// Inode number.
    pub inode: u64,
}

/// One line of maps text (printed by `Display`, without the newline).
#[derive(Debug, Clone, Copy)]
pub struct MapsLine<'a> {
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// Permissions.
    pub prot: Prot,
    /// Shared (`s`) or private (`p`).
    pub shared: bool,
    /// Byte offset in the object (0 for anonymous memory).
    pub offset: u64,
    /// Device and inode of the object (zeros for anonymous memory).
    pub identity: FileIdentity,
    /// The path or label (`[heap]`, `[stack]`, `[anon:NAME]`), or empty.
    pub name: &'a str,
}

/// Where a name starts: the width Linux pads to (`25 + sizeof(void *) * 6 - 1`), plus the
/// space it writes after the padding.
const NAME_COLUMN: usize = 73;

impl fmt::Display for MapsLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sharing = if self.shared { 's' } else { 'p' };
        let FileIdentity { major, minor, inode } = self.identity;
        let head = format!(
            "{:08x}-{:08x} {}{sharing} {:08x} {major:02x}:{minor:02x} {inode} ",
            self.start, self.end, self.prot, self.offset
        );
        if self.name.is_empty() {
            f.write_str(&head)
        } else {
            write!(f, "{head:<width$}{}", self.name, width = NAME_COLUMN)
        }
    }
}

/// `maps` with the inode numbers of shared anonymous objects (`/dev/zero (deleted)`) zeroed,
/// for comparing the maps of two systems: each numbers the objects it creates itself.
pub fn without_shmem_inodes(maps: &str) -> String {
    maps.lines()
        .map(|line| match line.strip_suffix("/dev/zero (deleted)") {
            Some(head) => {
                let fields: Vec<&str> = head.split_whitespace().collect();
                let head = format!("{} 0 ", fields[..4.min(fields.len())].join(" "));
                format!("{head:<width$}/dev/zero (deleted)\n", width = NAME_COLUMN)
            }
            None => format!("{line}\n"),
        })
        .collect()
}
