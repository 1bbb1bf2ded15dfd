//! A page-granular model of the address space: one entry per mapped page. VMAs are not stored:
//! `maps()` derives them as maximal runs of pages that Linux's merge rule would join. Written
//! independently of the tree-based implementation, to test it differentially.

use std::collections::BTreeMap;
use std::sync::Arc;
use vma::{Errno, Layout, MapFlags, MappedFile, PAGE_SIZE, Prot, RemapFlags, STACK_GUARD_GAP};

#[derive(Clone, Debug)]
pub struct Page {
    prot: Prot,
    shared: bool,
    /// 0: private anonymous memory; otherwise an object number.
    object: usize,
    pgoff: u64,
    growsdown: bool,
    accounted: bool,
    dontfork: bool,
    locked: bool,
    noreserve: bool,
    nohugepage: bool,
}

impl Page {
    /// Whether `next` (the page after this one) belongs to the same VMA.
    fn joins(&self, next: &Page) -> bool {
        self.prot == next.prot
            && self.shared == next.shared
            && self.object == next.object
            && self.growsdown == next.growsdown
            && self.accounted == next.accounted
            && self.dontfork == next.dontfork
            && self.locked == next.locked
            && self.noreserve == next.noreserve
            && self.nohugepage == next.nohugepage
            && self.pgoff + 1 == next.pgoff
    }
}

pub struct Model {
    layout: Layout,
    pages: BTreeMap<u64, Page>,
    /// Object names by number (index 0 unused).
    names: Vec<String>,
    /// Files by address of their Arc, to number them.
    files: Vec<Arc<dyn MappedFile>>,
    heap: (u64, u64),
}

type Res<T> = Result<T, Errno>;

fn page_len(len: u64) -> Res<u64> {
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    len.checked_next_multiple_of(PAGE_SIZE).ok_or(Errno::ENOMEM)
}

impl Model {
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            pages: BTreeMap::new(),
            names: vec![String::new()],
            files: Vec::new(),
            heap: (layout.low, layout.low),
        }
    }

    fn object_of(&mut self, file: &Arc<dyn MappedFile>) -> usize {
        if let Some(i) = self.files.iter().position(|f| Arc::ptr_eq(f, file)) {
            return i + 1;
        }
        self.files.push(file.clone());
        self.names.push(file.name().to_string());
        self.files.len()
    }

    fn free(&self, start: u64, end: u64) -> bool {
        self.pages.range(start..end).next().is_none()
    }

    /// Maximal runs: (start, end, first page).
    fn vmas(&self) -> Vec<(u64, u64, Page)> {
        let mut runs: Vec<(u64, u64, Page)> = Vec::new();
        let mut last: Option<(u64, Page)> = None;
        for (&addr, page) in &self.pages {
            match (&mut runs.last_mut(), &last) {
                (Some(run), Some((prev_addr, prev)))
                    if *prev_addr + PAGE_SIZE == addr && prev.joins(page) =>
                {
                    run.1 = addr + PAGE_SIZE
                }
                _ => runs.push((addr, addr + PAGE_SIZE, page.clone())),
            }
            last = Some((addr, page.clone()));
        }
        runs
    }

    pub fn maps(&self) -> String {
        let (heap_start, brk) = self.heap;
        let mut out = String::new();
        for (start, end, page) in self.vmas() {
            let (offset, identity, name) = if page.object != 0 {
                let file = &self.files[page.object - 1];
                (
                    page.pgoff * PAGE_SIZE,
                    file.identity(),
                    self.names[page.object].clone(),
                )
            } else if brk > heap_start && start <= brk && end >= heap_start {
                (0, vma::FileIdentity::default(), "[heap]".to_string())
            } else {
                (0, vma::FileIdentity::default(), String::new())
            };
            let line = vma::MapsLine {
                start,
                end,
                prot: page.prot,
                shared: page.shared,
                offset,
                identity,
                name: &name,
            };
            out.push_str(&format!("{line}\n"));
        }
        out
    }

    /// How far a free range ending at `end` may reach: the first mapped page at or above
    /// `end`, less the stack guard gap when a stack starts there (Linux's `vm_start_gap`).
    fn start_gap_after(&self, end: u64) -> u64 {
        match self.pages.range(end..).next() {
            Some((&addr, page)) if page.growsdown => addr.saturating_sub(STACK_GUARD_GAP),
            Some((&addr, _)) => addr,
            None => u64::MAX,
        }
    }

    /// Highest free `len` bytes inside [lo, hi), page by page, clear of a stack's guard gap.
    fn highest_free(&self, lo: u64, hi: u64, len: u64) -> Option<u64> {
        let mut top = hi;
        while top >= lo + len {
            let start = top - len;
            match self.pages.range(start..top).next_back() {
                None if self.start_gap_after(top) >= top => return Some(start),
                None => top = self.start_gap_after(top),
                Some((&addr, _)) => top = addr,
            }
        }
        None
    }

    fn lowest_free(&self, lo: u64, hi: u64, len: u64) -> Option<u64> {
        let mut start = lo;
        while start + len <= hi {
            match self.pages.range(start..start + len).next() {
                None if self.start_gap_after(start + len) >= start + len => return Some(start),
                // Too close below a stack: on past it.
                None => {
                    let (&stack, _) = self.pages.range(start + len..).next().expect("a stack above");
                    start = stack + PAGE_SIZE;
                }
                Some((&addr, _)) => start = addr + PAGE_SIZE,
            }
        }
        None
    }

    fn place(&self, hint: u64, len: u64) -> Res<u64> {
        let Layout { low, high, mmap_base } = self.layout;
        if len > high - low {
            return Err(Errno::ENOMEM);
        }
        let hint = hint.checked_next_multiple_of(PAGE_SIZE).unwrap_or(0);
        if hint >= low
            && hint.checked_add(len).is_some_and(|e| e <= high)
            && self.free(hint, hint + len)
            && self.start_gap_after(hint + len) >= hint + len
        {
            return Ok(hint);
        }
        self.highest_free(low, mmap_base, len)
            .or_else(|| self.lowest_free(mmap_base, high, len))
            .ok_or(Errno::ENOMEM)
    }

    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(Arc<dyn MappedFile>, u64)>,
    ) -> Res<u64> {
        let offset = file.as_ref().map_or(0, |f| f.1);
        // Both sharing flags are MAP_SHARED_VALIDATE: a shared file mapping, EINVAL anonymous.
        let shared = match (flags.shared, flags.private) {
            (false, false) => return Err(Errno::EINVAL),
            (true, true) if flags.anonymous => return Err(Errno::EINVAL),
            (shared, _) => shared,
        };
        if offset % PAGE_SIZE != 0 || (flags.growsdown && shared) {
            return Err(Errno::EINVAL);
        }
        let offset = if flags.anonymous { 0 } else { offset };
        let object = match (flags.anonymous, &file) {
            (true, _) if shared => {
                self.names.push("/dev/zero (deleted)".to_string());
                self.files.push(Arc::new(vma::SharedAnonymous::new()));
                self.names.len() - 1
            }
            (true, _) => 0,
            (false, Some((f, _))) => self.object_of(f),
            (false, None) => return Err(Errno::EBADF),
        };
        let len = page_len(len)?;
        let fixed = flags.fixed || flags.fixed_noreplace;
        let start = if fixed {
            if addr % PAGE_SIZE != 0 {
                return Err(Errno::EINVAL);
            }
            if addr.checked_add(len).is_none_or(|e| e > self.layout.high) {
                return Err(Errno::ENOMEM);
            }
            if addr < self.layout.low {
                return Err(Errno::EPERM);
            }
            if flags.fixed_noreplace && !self.free(addr, addr + len) {
                return Err(Errno::EEXIST);
            }
            addr
        } else {
            self.place(addr, len)?
        };
        let first_pgoff = if object == 0 {
            start / PAGE_SIZE
        } else {
            offset / PAGE_SIZE
        };
        for i in 0..len / PAGE_SIZE {
            let page = Page {
                prot,
                shared,
                object,
                pgoff: first_pgoff + i,
                growsdown: flags.growsdown,
                accounted: !shared && prot.write && !flags.noreserve,
                dontfork: false,
                locked: flags.locked,
                noreserve: flags.noreserve,
                nohugepage: flags.stack,
            };
            self.pages.insert(start + i * PAGE_SIZE, page);
        }
        Ok(start)
    }

    pub fn munmap(&mut self, addr: u64, len: u64) -> Res<()> {
        if addr % PAGE_SIZE != 0 || addr > self.layout.high || len > self.layout.high - addr || len == 0 {
            return Err(Errno::EINVAL);
        }
        let len = len.next_multiple_of(PAGE_SIZE);
        let doomed: Vec<u64> = self.pages.range(addr..addr + len).map(|(&a, _)| a).collect();
        for a in doomed {
            self.pages.remove(&a);
        }
        Ok(())
    }

    pub fn mprotect(&mut self, addr: u64, len: u64, prot: Prot) -> Res<()> {
        if addr % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let len = page_len(len)?;
        let end = addr
            .checked_add(len)
            .filter(|&e| e <= self.layout.high)
            .ok_or(Errno::ENOMEM)?;
        let mut at = addr;
        while at < end {
            match self.pages.get_mut(&at) {
                Some(page) => {
                    page.prot = prot;
                    // Linux's `mprotect_fixup`: charged when made writable; anonymous memory
                    // never written (these tests make no faults: no anon_vma) is uncharged
                    // when made read-only.
                    if prot.write {
                        page.accounted |= !page.shared && !page.noreserve;
                    } else if page.object == 0 {
                        page.accounted = false;
                    }
                }
                None if at == addr => return Err(Errno::ENOMEM),
                None => return Err(Errno::ENOMEM),
            }
            at += PAGE_SIZE;
        }
        Ok(())
    }

    /// MADV_DONTFORK (`dontfork`) or MADV_DOFORK: the flag on every mapped page of the range,
    /// then ENOMEM if one is unmapped.
    pub fn set_dontfork(&mut self, addr: u64, len: u64, dontfork: bool) -> Res<()> {
        if addr % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let end = len
            .checked_next_multiple_of(PAGE_SIZE)
            .and_then(|len| addr.checked_add(len))
            .ok_or(Errno::EINVAL)?;
        let mut mapped = 0;
        for (_, page) in self.pages.range_mut(addr..end) {
            page.dontfork = dontfork;
            mapped += PAGE_SIZE;
        }
        if mapped < end - addr {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// mlock's or munlock's flag over the pages from `addr`'s page on, `len` with `addr`'s
    /// offset rounded up: set up to the first hole, which answers ENOMEM.
    pub fn set_locked(&mut self, addr: u64, len: u64, locked: bool) -> Res<(u64, u64)> {
        let start = addr - addr % PAGE_SIZE;
        let end = len
            .checked_add(addr - start)
            .and_then(|len| len.checked_next_multiple_of(PAGE_SIZE))
            .and_then(|len| start.checked_add(len))
            .ok_or(Errno::EINVAL)?;
        let mut at = start;
        while at < end {
            match self.pages.get_mut(&at) {
                Some(page) => page.locked = locked,
                None => return Err(Errno::ENOMEM),
            }
            at += PAGE_SIZE;
        }
        Ok((start, end))
    }

    /// The maximal run holding `addr`.
    fn vma_at(&self, addr: u64) -> Option<(u64, u64)> {
        self.vmas()
            .into_iter()
            .find(|&(s, e, _)| s <= addr && addr < e)
            .map(|(s, e, _)| (s, e))
    }

    pub fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
        new_addr: u64,
    ) -> Res<u64> {
        if flags.fixed && !flags.maymove {
            return Err(Errno::EINVAL);
        }
        if old % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        let (Some(old_len), Some(new_len)) = (
            old_len.checked_next_multiple_of(PAGE_SIZE),
            new_len.checked_next_multiple_of(PAGE_SIZE),
        ) else {
            return Err(Errno::EINVAL);
        };
        let high = self.layout.high;
        if new_len == 0 || new_len > high {
            return Err(Errno::EINVAL);
        }
        if flags.fixed
            && (new_addr % PAGE_SIZE != 0
                || new_addr < self.layout.low
                || new_addr.checked_add(new_len).is_none_or(|e| e > high)
                || (new_addr < old.saturating_add(old_len) && old < new_addr + new_len))
        {
            return Err(Errno::EINVAL);
        }
        let Some((_, vma_end)) = self.vma_at(old) else {
            return Err(Errno::EFAULT);
        };
        if old_len == 0 || old.checked_add(old_len).is_none_or(|e| e > high) {
            return Err(Errno::EINVAL);
        }
        let kept = old_len.min(new_len);
        // What must lie in one VMA: the old range to grow, the part kept to move and resize.
        let in_one_vma = match (flags.fixed, new_len.cmp(&old_len)) {
            (true, std::cmp::Ordering::Equal) => 0,
            (true, _) => kept,
            (false, std::cmp::Ordering::Greater) => old_len,
            (false, _) => 0,
        };
        if old + in_one_vma > vma_end {
            return Err(Errno::EFAULT);
        }
        if flags.fixed {
            self.munmap(new_addr, new_len).unwrap();
            return Ok(self.move_pages(old, old_len, new_len, new_addr));
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.munmap(old + new_len, old_len - new_len).unwrap();
            }
            return Ok(old);
        }
        if old + old_len == vma_end
            && let Some(grow_end) = old.checked_add(new_len).filter(|&e| e <= high)
            && self.free(vma_end, grow_end)
        {
            self.extend_last(old, vma_end, grow_end);
            return Ok(old);
        }
        if !flags.maymove {
            return Err(Errno::ENOMEM);
        }
        let target = self.place(0, new_len)?;
        Ok(self.move_pages(old, old_len, new_len, target))
    }

    /// Maps `[end, grow_end)` as the continuation of the page before `end`, which the run from
    /// `start` ends with.
    fn extend_last(&mut self, start: u64, end: u64, grow_end: u64) {
        debug_assert!(start < end);
        let last = self.pages[&(end - PAGE_SIZE)].clone();
        for (i, a) in (end..grow_end).step_by(PAGE_SIZE as usize).enumerate() {
            self.pages.insert(
                a,
                Page {
                    pgoff: last.pgoff + 1 + i as u64,
                    ..last.clone()
                },
            );
        }
    }

    /// Moves the pages of the part kept (holes stay holes) to the same offsets from `target`;
    /// growing continues the last page.
    fn move_pages(&mut self, old: u64, old_len: u64, new_len: u64, target: u64) -> u64 {
        let kept = old_len.min(new_len);
        let moved: Vec<(u64, Page)> = self
            .pages
            .range(old..old + kept)
            .map(|(&a, page)| (a - old + target, page.clone()))
            .collect();
        self.munmap(old, old_len).unwrap();
        self.pages.extend(moved);
        if new_len > kept {
            self.extend_last(target, target + kept, target + new_len);
        }
        target
    }

    pub fn set_heap_start(&mut self, start: u64) {
        self.heap = (start, start);
    }

    pub fn brk(&mut self, addr: u64) -> u64 {
        let (start, brk) = self.heap;
        if addr < start {
            return brk;
        }
        let Some(new_top) = addr
            .checked_next_multiple_of(PAGE_SIZE)
            .filter(|&t| t < self.layout.high)
        else {
            return brk;
        };
        let old_top = brk.next_multiple_of(PAGE_SIZE);
        if new_top < old_top {
            self.munmap(new_top, old_top - new_top).unwrap();
        } else if new_top > old_top {
            // A page above the heap stays free, and the guard gap below a stack.
            let stack_gap = match self.pages.range(old_top..).next() {
                Some((&at, page)) if page.growsdown => at.saturating_sub(STACK_GUARD_GAP),
                _ => u64::MAX,
            };
            if !self.free(old_top, new_top + PAGE_SIZE) || new_top + PAGE_SIZE > stack_gap {
                return brk;
            }
            for a in (old_top..new_top).step_by(PAGE_SIZE as usize) {
                self.pages.insert(
                    a,
                    Page {
                        prot: Prot::READ_WRITE,
                        shared: false,
                        object: 0,
                        pgoff: a / PAGE_SIZE,
                        growsdown: false,
                        accounted: true,
                        dontfork: false,
                        locked: false,
                        noreserve: false,
                        nohugepage: false,
                    },
                );
            }
        }
        self.heap.1 = addr;
        addr
    }
}
