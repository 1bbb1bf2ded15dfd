//! A design as a trace's target (`vma::trace::Target`), for the `replay-under-faults`
//! workload: the calls go to the design; each file the trace names is a zero-filled
//! `fault::File` of the design's frames, long enough for any mapping of it; brk, which the
//! designs do not have, maps and unmaps the heap's pages as Linux's brk would (fixed,
//! anonymous, read-write, private).

use crate::designs::Design;
use fault::{File, MapFlags, PAGE_SIZE, Prot, RemapFlags};
use maple::sync::Mutex;
use std::sync::Arc;
use vma::FileIdentity;

/// How long a trace's files are: past the end of every mapping in the repository's traces.
const FILE_LEN: u64 = 1 << 30;

/// See the module documentation.
pub struct DesignTarget<'a> {
    design: &'a dyn Design,
    /// The heap's start and break.
    heap: Mutex<(u64, u64)>,
}

impl<'a> DesignTarget<'a> {
    /// `design` as a trace's target.
    pub fn new(design: &'a dyn Design) -> Self {
        Self {
            design,
            heap: Mutex::new((0, 0)),
        }
    }
}

impl vma::trace::Target for DesignTarget<'_> {
    type File = Arc<File>;

    fn open(&self, name: &str, _identity: FileIdentity) -> Arc<File> {
        File::zeroed(name, self.design.memory().frames(), FILE_LEN).expect("shorter than the largest file")
    }

    fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        file: Option<(Arc<File>, u64)>,
    ) -> vma::Result<u64> {
        self.design.mmap(
            addr,
            len,
            prot,
            flags,
            file.as_ref().map(|(file, offset)| (file, *offset)),
        )
    }

    fn munmap(&self, addr: u64, len: u64) -> vma::Result<()> {
        self.design.munmap(addr, len)
    }

    fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> vma::Result<()> {
        self.design.mprotect(addr, len, prot)
    }

    fn mremap(&self, old: u64, len: u64, new_len: u64, flags: RemapFlags, new_addr: u64) -> vma::Result<u64> {
        self.design.mremap(old, len, new_len, flags, new_addr)
    }

    fn set_heap_start(&self, start: u64) -> vma::Result<()> {
        *self.heap.lock().unwrap() = (start, start);
        Ok(())
    }

    fn brk(&self, addr: u64) -> u64 {
        let mut heap = self.heap.lock().unwrap();
        let (start, brk) = *heap;
        if addr < start {
            return brk;
        }
        let (old_top, new_top) = (brk.next_multiple_of(PAGE_SIZE), addr.next_multiple_of(PAGE_SIZE));
        let moved = if new_top > old_top {
            let fixed = MapFlags::PRIVATE_ANONYMOUS.fixed_noreplace();
            self.design
                .mmap(old_top, new_top - old_top, Prot::READ_WRITE, fixed, None)
                .is_ok()
        } else {
            new_top == old_top || self.design.munmap(new_top, old_top - new_top).is_ok()
        };
        if moved {
            heap.1 = addr;
        }
        heap.1
    }
}
