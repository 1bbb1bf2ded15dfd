//! VMAs: an immutable description of a mapping plus one atomic lifecycle word.
//!
//! A [`Vma`] never changes after it is published; changing a mapping replaces its VMA. Beside
//! the description it carries the state word below, which faults and writers use to agree on
//! who may still use it.
//!
//! | bits | name | meaning |
//! | --- | --- | --- |
//! | 0..=27 | count | references held ([`VmaRef`]s) |
//! | 28 | `WAITER` | a writer waits for the count to reach zero; the last release wakes it |
//! | 29 | `BABY` | published but not yet usable: faults wait for the writer to finish |
//! | 30 | `ZOMBIE` | replaced: no new reference may be taken; lookups retry |
//!
//! Transitions: a VMA is born `BABY` (count 0); the writer that published it clears `BABY` at the
//! end of its operation. A writer that replaces it sets `ZOMBIE | WAITER` and waits for the count
//! to drain; the VMA is freed after that and a grace period. `try_get` increments the count only
//! from a state with neither flag (Acquire, pairing with the writer's Release when it clears
//! `BABY`); a release decrements it (Release, pairing with the writer's Acquire when it reads the
//! drained count), so everything a fault did through its reference happens before the VMA is
//! freed.

use crate::PAGE_SHIFT;
use maple::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use maple::sync::{Condvar, Mutex};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

const COUNT: u32 = (1 << 28) - 1;
const WAITER: u32 = 1 << 28;
const BABY: u32 = 1 << 29;
const ZOMBIE: u32 = 1 << 30;
/// Under shuttle, a freed VMA is poisoned with this state and its memory kept (quarantine), so
/// a fault that uses it after it was freed fails loudly.
#[cfg(feature = "shuttle")]
const FREED: u32 = 0xdead_beef;

/// Access permissions of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prot {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl Prot {
    /// No access.
    pub const NONE: Prot = Prot::new(false, false, false);
    /// Read only.
    pub const READ: Prot = Prot::new(true, false, false);
    /// Read and write.
    pub const READ_WRITE: Prot = Prot::new(true, true, false);
    /// Read and execute.
    pub const READ_EXEC: Prot = Prot::new(true, false, true);

    /// Permissions from their three bits.
    pub const fn new(read: bool, write: bool, exec: bool) -> Self {
        Self { read, write, exec }
    }

    /// Parses `rwx`-style text: three characters, each the letter or `-`.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 3 {
            return None;
        }
        let bit = |b: u8, letter: u8| match b {
            b'-' => Some(false),
            b if b == letter => Some(true),
            _ => None,
        };
        Some(Self::new(
            bit(bytes[0], b'r')?,
            bit(bytes[1], b'w')?,
            bit(bytes[2], b'x')?,
        ))
    }

    /// Whether it allows any access (Linux's `vma_is_accessible`).
    pub fn any(self) -> bool {
        self.read || self.write || self.exec
    }

    /// Whether `self` allows everything `other` allows.
    pub fn covers(self, other: Prot) -> bool {
        (self.read || !other.read) && (self.write || !other.write) && (self.exec || !other.exec)
    }
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bit = |on: bool, letter: char| if on { letter } else { '-' };
        write!(
            f,
            "{}{}{}",
            bit(self.read, 'r'),
            bit(self.write, 'w'),
            bit(self.exec, 'x')
        )
    }
}

/// An object that file mappings map (a file, a shared-memory object). Identity is the object:
/// two mappings map the same file when they hold the same `Arc`.
pub trait MappedFile: Any + Send + Sync + fmt::Debug {
    /// The name `maps()` shows for mappings of this object.
    fn name(&self) -> &str;

    /// The object's page size in bytes: [`PAGE_SIZE`](crate::PAGE_SIZE), or a huge page's
    /// (a hugetlb file's, 2 MiB). Mappings of an object with huge pages start, end and split
    /// only at multiples of it, lie at offsets that are multiples of it, and never merge (as
    /// Linux's hugetlb VMAs: `hugetlb_vm_op_split`, `VM_DONTEXPAND`).
    fn page_size(&self) -> u64 {
        crate::PAGE_SIZE
    }

    /// The device and inode `maps()` shows for mappings of this object: none by default.
    fn identity(&self) -> crate::FileIdentity {
        crate::FileIdentity::default()
    }

    /// Whether mappings of it refuse MAP_SYNC with EOPNOTSUPP, as a file of ext4 or xfs not on
    /// a DAX device does (`daxdev_mapping_supported`); shmem, memfds and anonymous memory take
    /// it (VM_SYNC, which keeps the mapping apart). No by default.
    fn refuses_sync(&self) -> bool {
        false
    }

    /// Whether this is the object of a MAP_SHARED | MAP_ANONYMOUS mapping (Linux's shmem
    /// behind it), which may be named like anonymous memory
    /// ([`AddressSpace::set_anon_name`](crate::AddressSpace::set_anon_name)).
    fn anonymous(&self) -> bool {
        false
    }
}

/// What a mapping maps.
#[derive(Debug, Clone)]
pub enum Backing {
    /// Zero-filled anonymous memory.
    Anonymous,
    /// A file-like object.
    File(Arc<dyn MappedFile>),
}

impl Backing {
    /// Whether both map the same object (both anonymous, or the same file).
    pub fn same_object(&self, other: &Backing) -> bool {
        match (self, other) {
            (Backing::Anonymous, Backing::Anonymous) => true,
            (Backing::File(a), Backing::File(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The page size of what is mapped (see [`MappedFile::page_size`]).
    pub fn page_size(&self) -> u64 {
        self.file().map_or(crate::PAGE_SIZE, |file| file.page_size())
    }

    /// The file, if any.
    pub fn file(&self) -> Option<&Arc<dyn MappedFile>> {
        match self {
            Backing::Anonymous => None,
            Backing::File(file) => Some(file),
        }
    }
}

/// Linux's `anon_vma` as merging sees it: the object a private mapping's own pages (written
/// anonymous memory, copies of file pages) belong to. A VMA gets one at its first write fault
/// ([`AddressSpace::prepare_anon`](crate::AddressSpace::prepare_anon)); the pieces split
/// from a VMA share it, and a merged VMA keeps it. Two VMAs whose `anon_vma`s differ never
/// merge. A fork gives each child VMA a new one linked to its parent's (`forked`), which
/// merges only with VMAs of the same `anon_vma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnonVma {
    id: u64,
    forked: bool,
}

/// Source of [`AnonVma`] identities (never 0: an [`AnonSlot`] holding 0 is empty).
static NEXT_ANON_VMA: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl AnonVma {
    /// A new `anon_vma`, distinct from every other.
    pub fn fresh() -> Self {
        Self {
            // Relaxed: only uniqueness matters.
            id: NEXT_ANON_VMA.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            forked: false,
        }
    }

    /// The child's `anon_vma` for a VMA with this one, copied by fork (Linux's
    /// `anon_vma_fork`: a new one whose chain also links the parent's).
    pub fn forked(self) -> Self {
        Self {
            forked: true,
            ..Self::fresh()
        }
    }

    /// This one, unless it was made by fork (then another VMA may not take it up).
    pub(crate) fn unforked(self) -> Option<Self> {
        (!self.forked).then_some(self)
    }

    fn encode(slot: Option<Self>) -> u64 {
        slot.map_or(0, |anon| anon.id << 1 | anon.forked as u64)
    }

    fn decode(word: u64) -> Option<Self> {
        (word != 0).then_some(Self {
            id: word >> 1,
            forked: word & 1 != 0,
        })
    }

    /// Whether VMAs with `a` and `b` may merge (Linux's `is_mergeable_anon_vma`): the same
    /// one, or one of them has none and the other was not made by a fork (whose chain is not
    /// singular: `vma_had_uncowed_parents`).
    pub fn compatible(a: Option<Self>, b: Option<Self>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(one), None) | (None, Some(one)) => !one.forked,
            (Some(a), Some(b)) => a == b,
        }
    }
}

/// Where a [`Mapping`] keeps its [`AnonVma`]: empty until the first write fault of a published
/// VMA sets it, once. Cloning a mapping takes what it holds then (a writer's copy of a VMA
/// carries the `anon_vma` the VMA had when it was copied).
pub struct AnonSlot(AtomicU64);

impl AnonSlot {
    /// A slot holding `anon`.
    pub fn new(anon: Option<AnonVma>) -> Self {
        Self(AtomicU64::new(AnonVma::encode(anon)))
    }

    /// What it holds.
    pub fn get(&self) -> Option<AnonVma> {
        // Acquire pairs with the Release of `prepare`'s CAS (only the identity is published).
        AnonVma::decode(self.0.load(Ordering::Acquire))
    }

    /// Sets it to `anon` unless it holds one already; returns what it holds then.
    pub(crate) fn prepare(&self, anon: AnonVma) -> AnonVma {
        // Release pairs with the Acquire of `get`.
        match self.0.compare_exchange(
            0,
            AnonVma::encode(Some(anon)),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => anon,
            Err(held) => AnonVma::decode(held).expect("a slot is set only once"),
        }
    }
}

impl Default for AnonSlot {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Clone for AnonSlot {
    fn clone(&self) -> Self {
        Self::new(self.get())
    }
}

impl fmt::Debug for AnonSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// The description of a mapping: everything a VMA is but its state. It never changes after
/// it is published, but for the [`AnonSlot`] its first write fault fills.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// First address (page aligned).
    pub start: u64,
    /// One past the last address (page aligned, above `start`).
    pub end: u64,
    /// Access permissions.
    pub prot: Prot,
    /// Shared (writes reach the object and other mappings of it) or private (copy-on-write).
    pub shared: bool,
    /// Anonymous memory or a file.
    pub backing: Backing,
    /// Page offset of `start` in the backing. Anonymous mappings get `start >> PAGE_SHIFT` when
    /// created and keep it when moved, as Linux does.
    pub pgoff: u64,
    /// Grows down (a stack).
    pub growsdown: bool,
    /// Charged to the commit limit (Linux's VM_ACCOUNT): set for private writable mappings,
    /// and kept when write permission is removed, so such a part does not merge with a
    /// never-writable neighbour (as on Linux).
    pub accounted: bool,
    /// An optional name for anonymous mappings (`maps()` shows it in brackets).
    pub name: Option<Arc<str>>,
    /// Left out of a fork's child (MADV_DONTFORK; Linux's VM_DONTCOPY).
    pub dontfork: bool,
    /// Locked in memory (mlock; Linux's VM_LOCKED): its pages are brought in and never evicted.
    pub locked: bool,
    /// Not charged to the commit limit (MAP_NORESERVE; Linux's VM_NORESERVE): making it
    /// writable does not make it `accounted`.
    pub noreserve: bool,
    /// Kept out of transparent huge pages (MAP_STACK; Linux's VM_NOHUGEPAGE).
    pub nohugepage: bool,
    /// Pages memory pressure may drop, not copied by fork (MAP_DROPPABLE; Linux's
    /// VM_DROPPABLE with VM_WIPEONFORK and VM_DONTDUMP).
    pub droppable: bool,
    /// Synchronous page faults asked for (MAP_SYNC; Linux's VM_SYNC).
    pub sync: bool,
    /// The `anon_vma` of its private pages, once it has one.
    pub anon: AnonSlot,
}

impl Mapping {
    /// The page size of what it maps (see [`MappedFile::page_size`]).
    pub fn page_size(&self) -> u64 {
        self.backing.page_size()
    }

    /// Pages covered.
    pub fn pages(&self) -> u64 {
        (self.end - self.start) >> PAGE_SHIFT
    }

    /// The part `[start, end)` of this mapping (inside it), with its page offset adjusted.
    pub fn slice(&self, start: u64, end: u64) -> Mapping {
        debug_assert!(self.start <= start && start < end && end <= self.end);
        Mapping {
            start,
            end,
            pgoff: self.pgoff + ((start - self.start) >> PAGE_SHIFT),
            ..self.clone()
        }
    }

    /// The same mapping with permissions `prot` (mprotect, Linux's `mprotect_fixup`): a
    /// private mapping made writable is charged to the commit limit from then on, unless
    /// MAP_NORESERVE or of huge pages, and stays charged when made read-only again — except
    /// anonymous memory never written (no `anon_vma`), which is uncharged then.
    pub fn protected(self, prot: Prot) -> Mapping {
        let accounted = if prot.write {
            self.accounted || (!self.shared && !self.noreserve && self.page_size() == crate::PAGE_SIZE)
        } else {
            self.accounted && (self.backing.file().is_some() || self.anon.get().is_some())
        };
        Mapping {
            prot,
            accounted,
            ..self
        }
    }

    /// Whether `next` is adjacent and may share this mapping's `anon_vma` (Linux's
    /// `anon_vma_compatible`): the same object at contiguous offsets and the same flags but
    /// for the permissions.
    pub fn anon_vma_compatible(&self, next: &Mapping) -> bool {
        self.end == next.start
            && self.backing.same_object(&next.backing)
            && self.pgoff + self.pages() == next.pgoff
            && self.same_vm_flags(next)
    }

    /// Whether `next`, starting where `self` ends, can join it in one VMA: same object,
    /// permissions, sharing and flags, and contiguous page offsets (Linux's merge rule).
    /// The merged mapping keeps the `anon_vma` either had ([`Mapping::absorb`]).
    pub fn can_merge(&self, next: &Mapping) -> bool {
        self.end == next.start
            && self.backing.page_size() == crate::PAGE_SIZE
            && self.same_flags(next)
            && self.backing.same_object(&next.backing)
            && self.pgoff + self.pages() == next.pgoff
            && AnonVma::compatible(self.anon.get(), next.anon.get())
    }

    /// Extends this mapping over `next`, which [`Mapping::can_merge`] allows: the merged
    /// mapping keeps the `anon_vma` either had.
    pub fn absorb(&mut self, next: &Mapping) {
        debug_assert!(self.can_merge(next));
        self.end = next.end;
        if self.anon.get().is_none() {
            self.anon = next.anon.clone();
        }
    }

    /// Whether both describe the same mapping of the same range.
    pub fn same_as(&self, other: &Mapping) -> bool {
        self.start == other.start
            && self.end == other.end
            && self.same_flags(other)
            && self.backing.same_object(&other.backing)
            && self.pgoff == other.pgoff
            && self.anon.get() == other.anon.get()
    }

    /// Whether both have the same permissions, flags and name.
    fn same_flags(&self, other: &Mapping) -> bool {
        self.prot == other.prot && self.name == other.name && self.same_vm_flags(other)
    }

    /// Whether both have the same flags but for the permissions (Linux's `vm_flags` outside
    /// `VM_ACCESS_FLAGS`).
    fn same_vm_flags(&self, other: &Mapping) -> bool {
        self.shared == other.shared
            && self.growsdown == other.growsdown
            && self.accounted == other.accounted
            && self.dontfork == other.dontfork
            && self.locked == other.locked
            && self.noreserve == other.noreserve
            && self.nohugepage == other.nohugepage
            && self.droppable == other.droppable
            && self.sync == other.sync
    }
}

/// A virtual memory area: a published [`Mapping`] and its lifecycle word.
#[derive(Debug)]
pub struct Vma {
    mapping: Mapping,
    state: AtomicU32,
}

/// Why a reference could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Not yet usable: wait for the writer to finish, then look up again.
    Baby,
    /// Replaced: look up again.
    Zombie,
}

impl Vma {
    /// A new VMA, born BABY.
    pub(crate) fn new(mapping: Mapping) -> Self {
        Self {
            mapping,
            state: AtomicU32::new(BABY),
        }
    }

    /// The mapping this VMA publishes.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// First address.
    pub fn start(&self) -> u64 {
        self.mapping.start
    }

    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.mapping.end
    }

    /// Access permissions.
    pub fn prot(&self) -> Prot {
        self.mapping.prot
    }

    /// Whether the VMA is usable, not yet usable (BABY) or replaced (ZOMBIE).
    #[inline]
    pub fn usable(&self) -> Result<(), Unusable> {
        // Acquire pairs with the writer's Release when it clears BABY.
        Self::check(self.state.load(Ordering::Acquire))
    }

    #[inline]
    fn check(state: u32) -> Result<(), Unusable> {
        #[cfg(feature = "shuttle")]
        assert_ne!(state, FREED, "a VMA was used after it was freed");
        if state & ZOMBIE != 0 {
            Err(Unusable::Zombie)
        } else if state & BABY != 0 {
            Err(Unusable::Baby)
        } else {
            Ok(())
        }
    }

    /// References held now (for statistics and tests).
    pub fn references(&self) -> u32 {
        self.state.load(Ordering::Relaxed) & COUNT
    }

    /// Takes a reference unless the VMA is BABY or ZOMBIE. The reference keeps the VMA
    /// allocated after the caller's RCU guard ends; the last release wakes a waiting writer
    /// through `events`.
    pub(crate) fn try_get<'a>(&self, events: &'a Events) -> Result<VmaRef<'a>, Unusable> {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            Self::check(state)?;
            assert!(state & COUNT < COUNT, "VMA reference count overflow");
            // Acquire pairs with the Release that cleared BABY.
            match self
                .state
                .compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(VmaRef {
                        vma: std::ptr::NonNull::from(self),
                        events,
                    });
                }
                Err(now) => state = now,
            }
        }
    }

    /// Marks the VMA replaced (ZOMBIE) and announces a waiting writer; returns whether
    /// references are still held.
    pub(crate) fn kill(&self) -> bool {
        // AcqRel: Acquire pairs with the Release of references already dropped.
        self.state.fetch_or(ZOMBIE | WAITER, Ordering::AcqRel) & COUNT != 0
    }

    /// Whether every reference has been released (after `kill`).
    pub(crate) fn drained(&self) -> bool {
        // Acquire pairs with the Release in `VmaRef::drop`.
        self.state.load(Ordering::Acquire) & COUNT == 0
    }

    /// Frees a displaced VMA (step 5). Under shuttle it is "freed" by poisoning it and keeping
    /// its memory (see `FREED`), so that a reader that still uses it (a protocol-breaking test
    /// variant) is caught.
    pub(crate) fn free(self: Box<Self>) {
        #[cfg(feature = "shuttle")]
        {
            self.state.store(FREED, Ordering::Release);
            Box::leak(self);
        }
        #[cfg(not(feature = "shuttle"))]
        drop(self);
    }

    /// Makes a BABY VMA usable.
    pub(crate) fn birth(&self) {
        // Release pairs with the Acquire of `try_get` and `usable`: the VMA's publication and
        // the writer's flush happen before any use.
        self.state.fetch_and(!BABY, Ordering::Release);
    }
}

/// Where faults wait for BABY VMAs to be born and writers wait for references to drain: one
/// mutex and condition variable per address space, touched only by waiters and by those who
/// wake them (a fault on a VMA no writer touches never comes here, and a writer that finds no
/// waiter does not take the lock).
#[derive(Debug)]
pub(crate) struct Events {
    lock: Mutex<()>,
    cond: Condvar,
    /// Threads inside `wait_until`.
    waiters: AtomicUsize,
}

impl Events {
    pub(crate) fn new() -> Self {
        Self {
            lock: Mutex::new(()),
            cond: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Wakes every waiter, after the caller changed what they wait for.
    pub(crate) fn notify(&self) {
        // Pairs with the fence in `wait_until` (store-buffering): either this load sees the
        // waiter, or the waiter's check sees the caller's change.
        fence(Ordering::SeqCst);
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Taking the lock orders the wake-up after a waiter's last check.
        let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.cond.notify_all();
    }

    /// Blocks until `done()` holds; `done` is re-checked under the lock after every wake-up.
    pub(crate) fn wait_until(&self, done: impl Fn() -> bool) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence in `notify`.
        fence(Ordering::SeqCst);
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !done() {
            lock = self.cond.wait(lock).unwrap_or_else(|e| e.into_inner());
        }
        drop(lock);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A reference to a VMA, released on drop: it keeps the VMA allocated (a writer replacing it
/// waits for the release) without an RCU guard, so its holder may block.
pub struct VmaRef<'a> {
    vma: std::ptr::NonNull<Vma>,
    events: &'a Events,
}

// SAFETY: a VmaRef only reads the VMA (Sync) and touches the (Sync) events of its space.
unsafe impl Send for VmaRef<'_> {}
// SAFETY: as above.
unsafe impl Sync for VmaRef<'_> {}

impl std::ops::Deref for VmaRef<'_> {
    type Target = Vma;

    fn deref(&self) -> &Vma {
        // SAFETY: the reference count keeps the VMA allocated until this is dropped.
        unsafe { self.vma.as_ref() }
    }
}

impl Drop for VmaRef<'_> {
    fn drop(&mut self) {
        // SAFETY: still referenced: the VMA is allocated.
        let vma = unsafe { self.vma.as_ref() };
        // Release pairs with the writer's Acquire in `drained`.
        let before = vma.state.fetch_sub(1, Ordering::Release);
        if before & COUNT == 1 && before & WAITER != 0 {
            self.events.notify();
        }
    }
}

impl fmt::Debug for VmaRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("VmaRef").field(&**self).finish()
    }
}

/// The anonymous object behind a MAP_SHARED | MAP_ANONYMOUS mapping (Linux: shmem, shown as
/// `/dev/zero (deleted)` on device 00:01); each such mmap makes a new one, with an inode
/// number of its own.
#[derive(Debug)]
pub struct SharedAnonymous {
    inode: u64,
}

/// The hugetlbfs object behind a MAP_HUGETLB | MAP_ANONYMOUS mapping (Linux's
/// `HUGETLB_ANON_FILE`, shown as `/anon_hugepage (deleted)`): mappings of it are of huge pages,
/// aligned to them, never merged. Each such mmap makes a new one, with an inode number of its
/// own.
#[derive(Debug)]
pub struct HugeAnonymous {
    page_size: u64,
    inode: u64,
}

impl HugeAnonymous {
    /// A new object of pages of `page_size` bytes.
    pub fn new(page_size: u64) -> Self {
        Self {
            page_size,
            // Relaxed: only uniqueness matters.
            inode: NEXT_SHMEM_INODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl MappedFile for HugeAnonymous {
    fn name(&self) -> &str {
        "/anon_hugepage (deleted)"
    }

    fn page_size(&self) -> u64 {
        self.page_size
    }

    fn identity(&self) -> crate::FileIdentity {
        crate::FileIdentity {
            inode: self.inode,
            ..crate::FileIdentity::default()
        }
    }
}

/// Inode numbers of shared anonymous objects.
static NEXT_SHMEM_INODE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl SharedAnonymous {
    /// A new object.
    pub fn new() -> Self {
        Self {
            // Relaxed: only uniqueness matters.
            inode: NEXT_SHMEM_INODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Default for SharedAnonymous {
    fn default() -> Self {
        Self::new()
    }
}

impl MappedFile for SharedAnonymous {
    fn name(&self) -> &str {
        "/dev/zero (deleted)"
    }

    fn identity(&self) -> crate::FileIdentity {
        crate::FileIdentity {
            major: 0,
            minor: 1,
            inode: self.inode,
        }
    }

    fn anonymous(&self) -> bool {
        true
    }
}
