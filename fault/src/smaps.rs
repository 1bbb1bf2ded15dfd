//! Per-VMA memory figures as Linux's `/proc/PID/smaps` reports them (`smaps_account`), read
//! off the page table: every present translation counts its page in `Rss`, and in `Pss`
//! divided by the number of translations mapping the frame (the frame's references less the
//! page cache's own); a frame mapped more than once is `Shared_*`, else `Private_*`, `*_Dirty`
//! when its translation is dirty; frames of the mapping's own (anonymous memory, private
//! copies) are `Anonymous`; a locked VMA's `Pss` is `Locked`.
//!
//! Differences from Linux: a read of anonymous memory here allocates a zeroed frame, where
//! Linux maps the zero page, which it does not count; a page is dirty only through its own
//! translation (Linux also asks the page cache); figures read while faults run are a snapshot
//! of each entry, as Linux's are.

use crate::Memory;
use maple::Guard;
use maple::rcu::DefaultRcu;
use std::fmt;
use vma::Mapping;

/// One VMA's figures, in bytes, after its maps line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Smaps {
    /// The VMA's line of `/proc/PID/maps`.
    pub header: String,
    /// Its length.
    pub size: u64,
    /// Its page size.
    pub page_size: u64,
    /// Resident: mapped by a present translation.
    pub rss: u64,
    /// Proportional: each resident page divided by the translations sharing it.
    pub pss: u64,
    /// Resident, mapped more than once, clean.
    pub shared_clean: u64,
    /// Resident, mapped more than once, dirty.
    pub shared_dirty: u64,
    /// Resident, mapped once, clean.
    pub private_clean: u64,
    /// Resident, mapped once, dirty.
    pub private_dirty: u64,
    /// Resident frames of the mapping's own (anonymous memory, private copies).
    pub anonymous: u64,
    /// `pss` of a locked VMA.
    pub locked: u64,
}

impl fmt::Display for Smaps {
    /// The block `/proc/PID/smaps` prints for the VMA, the fields modelled (values in kB,
    /// right-aligned in 8 columns after a label padded to 16, as Linux's `SEQ_PUT_DEC`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.header)?;
        let fields = [
            ("Size:", self.size),
            ("KernelPageSize:", self.page_size),
            ("MMUPageSize:", self.page_size),
            ("Rss:", self.rss),
            ("Pss:", self.pss),
            ("Shared_Clean:", self.shared_clean),
            ("Shared_Dirty:", self.shared_dirty),
            ("Private_Clean:", self.private_clean),
            ("Private_Dirty:", self.private_dirty),
            ("Anonymous:", self.anonymous),
            ("Locked:", self.locked),
        ];
        for (label, bytes) in fields {
            writeln!(f, "{label:<16}{:>8} kB", bytes >> 10)?;
        }
        Ok(())
    }
}

impl Memory {
    /// The figures of `mapping`'s translations (header left empty), read inside the read-side
    /// section `_guard` holds (the walk may meet tables being freed).
    pub fn smaps(&self, mapping: &Mapping, _guard: &Guard<'_, DefaultRcu>) -> Smaps {
        let mut figures = Smaps {
            size: mapping.end - mapping.start,
            page_size: mapping.page_size(),
            ..Smaps::default()
        };
        // Pss in 1/2^12ths of a byte, as Linux keeps it (`PSS_SHIFT`).
        let mut pss: u64 = 0;
        for (_, pte) in self.table().present(mapping.start, mapping.end) {
            let frame = pte.frame();
            let size = frame.size() as u64;
            // The page cache holds a reference on the frames of file pages it caches.
            let cached = u32::from(!pte.private());
            let mapped = u64::from(self.frames().references(frame).saturating_sub(cached).max(1));
            figures.rss += size;
            pss += (size << 12) / mapped;
            let slot = match (mapped > 1, pte.dirty()) {
                (true, false) => &mut figures.shared_clean,
                (true, true) => &mut figures.shared_dirty,
                (false, false) => &mut figures.private_clean,
                (false, true) => &mut figures.private_dirty,
            };
            *slot += size;
            if pte.private() {
                figures.anonymous += size;
            }
        }
        figures.pss = pss >> 12;
        if mapping.locked {
            figures.locked = figures.pss;
        }
        figures
    }
}
