//! The baseline a user would write instead: one reader-writer lock over a BTreeMap of VMAs
//! (mmap_sem before Linux 6.4). Anonymous private mappings only, with the same split and merge
//! rules as `vma::AddressSpace`, so benchmarks compare the same work.

use std::collections::BTreeMap;
use std::sync::RwLock;
use vma::Prot;

/// One VMA of the baseline: `[start, end)` with permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainVma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Permissions.
    pub prot: Prot,
}

/// An address space under one `RwLock<BTreeMap>`.
#[derive(Debug, Default)]
pub struct RwLockSpace {
    vmas: RwLock<BTreeMap<u64, PlainVma>>,
}

/// Why the baseline refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainError {
    /// The range is (partly) occupied.
    Occupied,
    /// Part of the range is unmapped.
    Unmapped,
}

fn overlapping(map: &BTreeMap<u64, PlainVma>, start: u64, end: u64) -> Vec<PlainVma> {
    let first = map
        .range(..start)
        .next_back()
        .filter(|(_, v)| v.end > start)
        .map(|(_, v)| *v);
    first
        .into_iter()
        .chain(map.range(start..end).map(|(_, v)| *v))
        .collect()
}

/// Removes `[start, end)`, keeping the parts of VMAs outside it.
fn carve(map: &mut BTreeMap<u64, PlainVma>, start: u64, end: u64) {
    for vma in overlapping(map, start, end) {
        map.remove(&vma.start);
        if vma.start < start {
            map.insert(vma.start, PlainVma { end: start, ..vma });
        }
        if vma.end > end {
            map.insert(end, PlainVma { start: end, ..vma });
        }
    }
}

/// Inserts `vma`, merging with neighbours of the same permissions.
fn insert_merged(map: &mut BTreeMap<u64, PlainVma>, mut vma: PlainVma) {
    if let Some((_, prev)) = map.range(..vma.start).next_back()
        && prev.end == vma.start
        && prev.prot == vma.prot
    {
        vma.start = prev.start;
        map.remove(&vma.start);
    }
    if let Some(next) = map.get(&vma.end).copied()
        && next.prot == vma.prot
    {
        vma.end = next.end;
        map.remove(&next.start);
    }
    map.insert(vma.start, vma);
}

impl RwLockSpace {
    /// An empty space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[addr, addr + len)` if it is free (MAP_FIXED_NOREPLACE).
    pub fn mmap_fixed_noreplace(&self, addr: u64, len: u64, prot: Prot) -> Result<u64, PlainError> {
        let mut map = self.vmas.write().unwrap();
        if !overlapping(&map, addr, addr + len).is_empty() {
            return Err(PlainError::Occupied);
        }
        insert_merged(
            &mut map,
            PlainVma {
                start: addr,
                end: addr + len,
                prot,
            },
        );
        Ok(addr)
    }

    /// Unmaps `[addr, addr + len)`.
    pub fn munmap(&self, addr: u64, len: u64) {
        carve(&mut self.vmas.write().unwrap(), addr, addr + len);
    }

    /// Changes the permissions of `[addr, addr + len)`, which must be mapped.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<(), PlainError> {
        let mut map = self.vmas.write().unwrap();
        let end = addr + len;
        let covered: u64 = overlapping(&map, addr, end)
            .iter()
            .map(|v| v.end.min(end) - v.start.max(addr))
            .sum();
        if covered != len {
            return Err(PlainError::Unmapped);
        }
        carve(&mut map, addr, end);
        insert_merged(
            &mut map,
            PlainVma {
                start: addr,
                end,
                prot,
            },
        );
        Ok(())
    }

    /// The VMA holding `addr`.
    pub fn lookup(&self, addr: u64) -> Option<PlainVma> {
        let map = self.vmas.read().unwrap();
        map.range(..=addr)
            .next_back()
            .map(|(_, v)| *v)
            .filter(|v| v.end > addr)
    }

    /// Number of VMAs.
    pub fn len(&self) -> usize {
        self.vmas.read().unwrap().len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
