//! Page-table memory with and without PMD sharing (`bench table-memory`): K address spaces map
//! the same N GiB of a shared hugetlb file, 1 GiB-aligned, and each faults one huge page in
//! every GiB — enough to build its level-2 table there (`no-share`) or to link the file's
//! shared one (maplevm). What each address space then needs for page tables is its own tables
//! (the root, a level-3 table per 512 GiB, and the level-2 tables it built) plus its share of
//! the shared tables (their count over K). Sharing makes the level-2 part 1/K of `no-share`'s,
//! which is the reason PMD sharing exists (seeds 000 and 003: hundreds of processes mapping the
//! same hundreds of GiB).

use crate::designs::{self, DesignConfig};
use fault::{Access, File, FramePool, FramePoolConfig, HUGE_FRAME_SIZE};
use std::fmt::Write as _;
use std::sync::Arc;
use vma::{MapFlags, PAGE_SIZE, Prot};

const GIB: u64 = 1 << 30;
/// Where each address space maps the file: 1 GiB-aligned.
const AT: u64 = 1 << 40;
/// Most address spaces a measurement may have.
pub const MAX_SPACES: usize = 1024;
/// Most GiB a measurement may map (one level-3 table's reach).
pub const MAX_GIB: u64 = 512;

/// What one design's address spaces need for page tables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableMemory {
    /// The design measured (`rcu` shares, `no-share` does not).
    pub design: &'static str,
    /// Tables each address space owns, the root included (the same in every one).
    pub own_tables: usize,
    /// Level-2 tables the address spaces share, for all of them together.
    pub shared_tables: usize,
    /// Bytes per address space: its own tables and its share of the shared ones.
    pub bytes_per_space: f64,
}

/// Maps `gib` GiB of one shared hugetlb file into `spaces` address spaces of `design` and
/// faults one huge page per GiB in each; returns what their page tables take.
pub fn measure(design: &'static str, spaces: usize, gib: u64) -> Result<TableMemory, String> {
    if !(1..=MAX_SPACES).contains(&spaces) {
        return Err(format!("spaces: from 1 to {MAX_SPACES}"));
    }
    if !(1..=MAX_GIB).contains(&gib) {
        return Err(format!("gib: from 1 to {MAX_GIB}"));
    }
    let len = gib * GIB;
    let huge_pages = (len / HUGE_FRAME_SIZE as u64) as usize;
    let frames = Arc::new(
        FramePool::with_huge_pages(FramePoolConfig::default(), huge_pages).map_err(|e| e.to_string())?,
    );
    let built: Vec<_> = (0..spaces)
        .map(|_| designs::build(design, DesignConfig::default(), frames.clone()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("unknown design {design}"))?;
    let file = File::hugetlb("/hugepages/table-memory", &frames, len, built[0].file_sync())
        .map_err(|e| e.to_string())?;
    let mut own = Vec::new();
    for space in &built {
        let at = space
            .mmap(
                AT,
                len,
                Prot::READ_WRITE,
                MapFlags::SHARED.fixed_noreplace(),
                Some((&file, 0)),
            )
            .map_err(|e| e.to_string())?;
        for g in 0..gib {
            space
                .fault(at + g * GIB, Access::Write)
                .map_err(|e| format!("fault at {:#x}: {e}", at + g * GIB))?;
        }
        // The root is not among the tables counted below it.
        own.push(space.memory().table().tables() + 1);
    }
    let shared_tables = file.shared_page_tables();
    for space in &built {
        space.munmap(AT, len).map_err(|e| e.to_string())?;
        space.barrier();
    }
    let own_tables = own[0];
    if own.iter().any(|&n| n != own_tables) {
        return Err(format!("address spaces own different numbers of tables: {own:?}"));
    }
    let table = PAGE_SIZE as f64;
    Ok(TableMemory {
        design,
        own_tables,
        shared_tables,
        bytes_per_space: own_tables as f64 * table + shared_tables as f64 * table / spaces as f64,
    })
}

/// `measure` for maplevm and `no-share`, as a Markdown table.
pub fn compare(spaces: usize, gib: u64) -> Result<String, String> {
    let sharing = measure("rcu", spaces, gib)?;
    let control = measure("no-share", spaces, gib)?;
    let mut out = format!(
        "{spaces} address spaces each map the same {gib} GiB of a shared hugetlb file, 1 GiB-aligned, \
         and fault one huge page per GiB.\n\n\
         | design | own tables per space | shared tables | page-table memory per space | vs no-share |\n\
         |---|---:|---:|---:|---:|\n"
    );
    for m in [sharing, control] {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} KiB | {:.3}x |",
            m.design,
            m.own_tables,
            m.shared_tables,
            m.bytes_per_space / 1024.0,
            m.bytes_per_space / control.bytes_per_space
        );
    }
    Ok(out)
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;

    #[test]
    fn sharing_makes_the_level_2_tables_one_kth() {
        let (spaces, gib) = (8, 16);
        let sharing = measure("rcu", spaces, gib).unwrap();
        let control = measure("no-share", spaces, gib).unwrap();
        // The root and one level-3 table each; the level-2 tables once for all, or in each.
        assert_eq!((sharing.own_tables, sharing.shared_tables), (2, 16));
        assert_eq!((control.own_tables, control.shared_tables), (18, 0));
        let level2 = |m: &TableMemory| m.bytes_per_space - 2.0 * PAGE_SIZE as f64;
        assert_eq!(level2(&sharing) * spaces as f64, level2(&control));
        assert!(
            compare(spaces, gib)
                .unwrap()
                .contains("| rcu | 2 | 16 | 16.0 KiB | 0.222x |")
        );
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(measure("rcu", 0, 1).is_err());
        assert!(measure("rcu", 1, 0).is_err());
        assert!(measure("rcu", 1, MAX_GIB + 1).is_err());
        assert!(measure("nope", 1, 1).is_err());
    }
}
