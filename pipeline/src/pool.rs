//! The payload page pool [`PagePool`], the [`Pool`] trait every pool of
//! this crate implements (counters and audit, for the stack and the apps),
//! and what the pools share: [`PoolLayout`], [`PoolStats`], [`PoolAudit`],
//! [`Returner`]. The header pool is [`crate::HeaderPool`].
//!
//! This module owns the page pool's memory (one [`DmaRegion`], allocated
//! and mapped for the device once at creation and kept mapped until the
//! last handle is gone, and never freed while a buffer is lent out), the
//! free-buffer bookkeeping, and the counters. The design follows Linux
//! page_pool:
//!
//! - **Owner fast path** ([`BufPool::alloc`] / [`BufPool::recycle`] on the
//!   thread that owns the pool): a LIFO cache of free buffer indices, a plain
//!   `Vec<u32>`, no atomics. When it runs empty it refills `bulk` buffers at
//!   once from the shared ring; when it is full it flushes `bulk` at once.
//! - **Shared ring**: a `crossbeam_queue::ArrayQueue<u32>` sized to hold every
//!   buffer, so a correct return can never find it full. It holds every
//!   buffer that is neither in the cache nor lent out.
//! - **Foreign path** ([`BufReturn::give_back`], any thread), chosen by
//!   [`PagePoolConfig::foreign`]: [`ForeignReturn::Batched`] (default) takes
//!   the spill list's lock *once per call* and appends the whole batch to a
//!   `Vec<u32>`; the owner drains the spill list in bulk (one lock per
//!   refill) when its cache runs dry, before it tries the ring.
//!   [`ForeignReturn::Ring`] pushes each buffer into the ring (one atomic
//!   read-modify-write per buffer). The spill lock is a [`TimedMutex`]:
//!   [`PagePool::lock_stats`] gives its acquisitions, failed try-locks and
//!   wait / hold times. [`Returner`] collects buffers on an application
//!   thread and gives them back every `recycle_batch` buffers.
//!   [`BufPool::returner`] hands out the shared part as an `Arc`; that part
//!   owns the DMA region, so the memory lives as long as the pool or any
//!   returner does.
//!
//! A buffer is a `u32` index; its host and device addresses are computed from
//! the index (no table). Returns are validated (index in range, IOVA matches
//! the index); anything else is refused, counted in
//! [`PoolStats::recycle_ring_full`] and logged, never undefined behaviour. In
//! *checked* mode (default in debug builds) a per-buffer state array also
//! refuses a buffer returned twice at the moment it happens.
//!
//! Cost on the 2 vCPU build VM (`examples/poolbench_quick.rs`, release):
//! owner alloc + recycle about 3 ns; foreign
//! `give_back` through the ring and refill from it about 15 ns per buffer,
//! because the ArrayQueue takes one atomic read-modify-write per buffer,
//! batch or not. The batched spill path takes one lock per batch instead:
//! `give_back` in batches of 64 about 2.9 ns per buffer, the owner's refill
//! from the spill list about 2.5 ns per buffer (one lock per `bulk`); a
//! [`Returner`] at `recycle_batch` 64 about 5.5-6 ns per buffer including its
//! own collecting, at `recycle_batch` 1 about 31 ns (one lock per page).
//!
//! ```
//! use std::sync::Arc;
//! use driver::{BufPool, DmaError, DmaMapper, DmaSpace};
//! use pipeline::{HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
//!
//! struct NoIommu;
//! impl DmaMapper for NoIommu {
//!     unsafe fn map(&self, _: u64, _: *mut u8, _: usize) -> Result<(), DmaError> { Ok(()) }
//!     fn unmap(&self, _: u64, _: usize) -> Result<(), DmaError> { Ok(()) }
//! }
//!
//! let space = DmaSpace::new(Arc::new(NoIommu));
//! let mut pages = PagePool::new(&space, PagePoolConfig { buffers: 256, ..Default::default() })?;
//! let mut headers = HeaderPool::new(&space, HeaderPoolConfig { buffers: 256, ..Default::default() })?;
//! let (p, h) = (pages.alloc().unwrap(), headers.alloc().unwrap());
//! assert_eq!(pages.headroom(), 256);
//! pages.recycle(p);
//! // A buffer can also come back from any thread, in batches.
//! headers.returner().give_back(&mut vec![h]);
//! assert_eq!(pages.audit().lent + headers.audit().lent, 0);
//! # Ok::<(), pipeline::PoolError>(())
//! ```

use crate::lockstats::{LockStats, TimedMutex};
use crate::sync::AtomicUsize;
use crossbeam_queue::ArrayQueue;
use driver::dma::PAGE_SIZE;
use driver::{Buf, BufPool, BufReturn, DmaError, DmaRegion, DmaSpace};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Most buffers one pool may hold (2^26). Bounds the index arithmetic (see
/// [`PoolLayout`]); 2^26 payload pages are 256 GiB.
pub const MAX_BUFFERS: usize = 1 << 26;

/// Why a pool could not be created.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PoolError {
    #[error(
        "payload buffer of {buf_len} B with {headroom} B headroom: buf_len must be 1024..=4096 in 1 KiB steps, \
         headroom even, and buf_len + headroom <= 4096"
    )]
    BufLen { buf_len: usize, headroom: usize },
    #[error("header slot of {0} B: must be 64..=960 in 64 B steps (SRRCTL.BSIZEHEADER)")]
    SlotSize(usize),
    #[error("{0} buffers: a pool holds 1..={MAX_BUFFERS}")]
    BufferCount(usize),
    #[error("cache of {cache_size} with bulk {bulk}: need 1 <= bulk <= cache_size")]
    Cache { cache_size: usize, bulk: usize },
    #[error("recycle batch of {0}: must be 1..={MAX_RECYCLE_BATCH}")]
    RecycleBatch(usize),
    #[error("header slot of {0} B for the packed strategy: must be 64..=256 in 64 B steps")]
    PackedSlot(usize),
    #[error(transparent)]
    Dma(#[from] DmaError),
}

/// Largest [`Returner`] batch (devmem's SO_DEVMEM_DONTNEED limit).
pub const MAX_RECYCLE_BATCH: usize = 1024;

/// How [`BufReturn::give_back`] puts buffers back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForeignReturn {
    /// One atomic push into the shared ring per buffer.
    Ring,
    /// One lock acquisition per `give_back` call: the batch is appended to
    /// a spill list the owner drains in bulk.
    #[default]
    Batched,
}

/// Payload page pool settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagePoolConfig {
    /// Number of buffers (one 4 KiB page each).
    pub buffers: usize,
    /// Bytes the device may write per buffer (SRRCTL.BSIZEPACKET):
    /// 1024..=4096 in 1 KiB steps.
    pub buf_len: usize,
    /// Bytes kept free before each buffer so a header can be prepended in
    /// place. Even (bit 0 of a descriptor's buffer address is not an
    /// address bit on igb); `buf_len + headroom <= 4096`.
    pub headroom: usize,
    /// Owner cache capacity, in buffers.
    pub cache_size: usize,
    /// Buffers moved per refill from / flush to the shared ring.
    pub bulk: usize,
    /// Track each buffer's owner and refuse double returns as they happen
    /// (one atomic swap per alloc and per return).
    pub checked: bool,
    /// Foreign return path.
    pub foreign: ForeignReturn,
}

impl Default for PagePoolConfig {
    fn default() -> Self {
        PagePoolConfig {
            buffers: 4096,
            buf_len: 2048,
            headroom: 256,
            cache_size: 128,
            bulk: 64,
            checked: cfg!(debug_assertions),
            foreign: ForeignReturn::Batched,
        }
    }
}

/// Counters, named after Linux page_pool's (`ethtool -S` shows them as
/// `alloc_fast`, `recycle_ring_full`, ...) so they read the same way.
///
/// Invariants: `alloc_fast + alloc_slow` is the number of `alloc` calls;
/// `alloc_fast + alloc_slow - alloc_empty` of them returned a buffer.
#[derive(serde::Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Allocations served from the owner cache (the fast path).
    pub alloc_fast: u64,
    /// Allocations that found the cache empty and went to the shared ring
    /// (successful or not).
    pub alloc_slow: u64,
    /// Buffers moved from the shared ring into the cache by refills.
    pub alloc_refill: u64,
    /// Allocations that failed: cache and ring both empty, the pool is
    /// exhausted (every buffer is lent out). The ring will get an RX drop.
    pub alloc_empty: u64,
    /// Owner recycles into the cache (every accepted `recycle`).
    pub recycle_cached: u64,
    /// Buffers flushed from a full cache to the shared ring, counted per
    /// buffer (a flush moves `bulk` at once).
    pub recycle_cache_full: u64,
    /// Buffers returned through the foreign path ([`BufReturn::give_back`]).
    pub recycle_ring: u64,
    /// Returns refused: the ring was full (only possible after a double
    /// free), or the buffer is not ours (index out of range, IOVA does not
    /// match the index), or, in checked mode, it was already back in the
    /// pool. Each one is logged as an error; non-zero means a caller bug.
    pub recycle_ring_full: u64,
    /// Buffers idle in the pool when its owner was torn down; they are
    /// released with the memory once the last returner is gone.
    pub released: u64,
}

/// Moves indices from `queue` into `cache` until it holds `n` or the queue
/// is empty.
pub(crate) fn fill_from(queue: &crossbeam_queue::ArrayQueue<u32>, cache: &mut Vec<u32>, n: usize) {
    while cache.len() < n {
        match queue.pop() {
            Some(idx) => cache.push(idx),
            None => break,
        }
    }
}

/// Where every buffer is, from [`Pool::audit`].
#[derive(serde::Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolAudit {
    /// Buffers in the pool.
    pub total: usize,
    /// Free buffers in the owner cache.
    pub in_cache: usize,
    /// Free buffers in the shared ring or the spill list.
    pub in_ring: usize,
    /// `total - in_cache - in_ring`: buffers lent out (posted to a ring,
    /// held by the stack or the application).
    pub lent: usize,
}

/// What every pool of this crate tells about itself, whatever its kind or
/// strategy: the counters, the lock figures and where its buffers are.
/// Lets the stack and the apps audit any pool without knowing which.
pub trait Pool: BufPool {
    /// Counters so far (foreign-path ones are a relaxed snapshot).
    fn stats(&self) -> PoolStats;
    /// Figures of the pool's lock, if it takes one (zeros otherwise).
    fn lock_stats(&self) -> LockStats;
    /// Where every buffer is. With nothing lent and no return in flight,
    /// `lent == 0` proves every buffer came back.
    fn audit(&self) -> PoolAudit;
}

/// Where buffers sit in the pool memory. Buffer `idx` lives in page
/// `idx / per_page`, slot `idx % per_page`; its device-visible bytes start
/// at `page * 4096 + slot * stride + headroom`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLayout {
    /// Bytes the device may write per buffer.
    pub buf_len: usize,
    /// Bytes before each buffer that belong to it (owner-writable).
    pub headroom: usize,
    /// Distance between buffers that share a page (a whole page for payload).
    pub stride: usize,
    /// Buffers per 4 KiB page (1 for payload, `4096 / slot` for headers).
    pub per_page: usize,
    /// `ceil(2^32 / per_page)`: `idx / per_page == (idx * recip) >> 32` for
    /// every `idx < 2^26` and `per_page <= 64` (Lemire, Kaser, Kurz, "Faster
    /// remainder by direct computation", thm. 1: needs
    /// `recip * per_page - 2^32 < 2^(32 - 26)`), which avoids a division on
    /// the fast path.
    recip: u64,
    /// `stride` divides the page (every payload pool, header slots of 64,
    /// 128 or 256 B): no buffer straddles a page gap, so buffer `idx`
    /// starts at `idx * stride`, one multiplication.
    exact: bool,
    /// `buf_len` and `headroom` as a [`Buf`] stores them, ready to copy.
    buf_len16: u16,
    headroom16: u16,
}

impl PoolLayout {
    pub(crate) fn new(buf_len: usize, headroom: usize, stride: usize) -> Self {
        let per_page = PAGE_SIZE / stride;
        debug_assert!((1..=64).contains(&per_page) && headroom + buf_len <= stride);
        PoolLayout {
            buf_len,
            headroom,
            stride,
            per_page,
            recip: (1u64 << 32).div_ceil(per_page as u64),
            exact: PAGE_SIZE.is_multiple_of(stride),
            // Both at most 4096 (headroom + buf_len <= stride <= 4096).
            buf_len16: buf_len as u16,
            headroom16: headroom as u16,
        }
    }

    /// Byte offset of buffer `idx` (after its headroom) in the region.
    #[inline(always)]
    pub(crate) fn offset(&self, idx: u32) -> usize {
        if self.exact {
            // Pages hold whole buffers only (the general form below gives
            // the same): a multiplication, a shift for payload pages.
            return idx as usize * self.stride + self.headroom;
        }
        let page = ((idx as u64 * self.recip) >> 32) as usize;
        let slot = idx as usize - page * self.per_page;
        page * PAGE_SIZE + slot * self.stride + self.headroom
    }

    /// Page of buffer `idx` (`idx / per_page` without a division).
    #[inline(always)]
    pub(crate) fn page_of(&self, idx: u32) -> u32 {
        ((idx as u64 * self.recip) >> 32) as u32
    }

    /// Pages needed for `buffers` buffers.
    pub(crate) fn pages(&self, buffers: usize) -> usize {
        buffers.div_ceil(self.per_page)
    }
}

/// Geometry both halves need to turn an index into addresses and to check
/// that a returned [`Buf`] is one of ours.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) layout: PoolLayout,
    pub(crate) total: u32,
    pub(crate) base_iova: u64,
}

impl Geometry {
    #[inline(always)]
    pub(crate) fn iova(&self, idx: u32) -> u64 {
        self.base_iova + self.layout.offset(idx) as u64
    }

    /// The handle of buffer `idx`, whose bytes start `offset(idx)` into the
    /// region at `base`. The one place the pools make a [`Buf`].
    ///
    /// # Safety
    /// `base` is the host address of the region this geometry describes
    /// (`layout.pages(total)` pages, kept allocated while any buffer is lent
    /// out), `idx < total`, and buffer `idx` is free: the caller just took
    /// it off a free list and lends it to the `Buf` alone.
    #[inline(always)]
    pub(crate) unsafe fn buf_at(&self, base: *mut u8, idx: u32) -> Buf {
        let l = &self.layout;
        let off = l.offset(idx);
        // SAFETY: idx < total, so `off` lies inside the region (it covers
        // `pages(total)` pages and `offset` stays in page `idx / per_page`);
        // an in-bounds offset from a non-null base is non-null.
        let ptr = unsafe { NonNull::new_unchecked(base.add(off)) };
        // SAFETY: buffer `idx` is `buf_len` bytes after `headroom` bytes of
        // its own, inside the region (the pool constructors check headroom +
        // buf_len <= stride); the region is zero-initialised, stays
        // allocated while the buffer is lent (the caller's promise) and the
        // caller lends it to this handle only.
        unsafe {
            Buf::from_raw_parts(
                idx,
                self.base_iova + off as u64,
                ptr,
                l.buf_len16,
                l.headroom16,
            )
        }
    }

    /// Why `buf` cannot be one of ours, if it cannot.
    #[inline(always)]
    pub(crate) fn check(&self, buf: &Buf) -> Result<(), Refusal> {
        if buf.idx() >= self.total {
            Err(Refusal::OutOfRange)
        } else if buf.iova() != self.iova(buf.idx()) {
            Err(Refusal::Foreign)
        } else {
            Ok(())
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    OutOfRange,
    Foreign,
    DoubleReturn,
    RingFull,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::OutOfRange => "index out of range (buffer from another pool?)",
            Refusal::Foreign => "IOVA does not match the index (buffer from another pool?)",
            Refusal::DoubleReturn => "buffer is already back in the pool (double free)",
            Refusal::RingFull => "shared ring full (double free or buffer from another pool)",
        }
    }
}

/// The part of a pool shared with returners: memory, ring, foreign counters.
/// A pool's memory: unmapped and freed when the pool's last handle goes,
/// unless buffers are still lent out then. Those [`Buf`]s point into it,
/// so it is leaked instead (with a warning): a `Buf` never outlives its
/// bytes, which is what makes its safe accessors sound.
pub(crate) struct PoolMemory {
    region: ManuallyDrop<DmaRegion>,
    name: &'static str,
    /// Buffers not home, set by the owning shared state's `Drop` just
    /// before this is dropped.
    pub(crate) lent_at_drop: usize,
}

impl PoolMemory {
    pub(crate) fn new(region: DmaRegion, name: &'static str) -> Self {
        PoolMemory {
            region: ManuallyDrop::new(region),
            name,
            lent_at_drop: 0,
        }
    }
}

impl std::ops::Deref for PoolMemory {
    type Target = DmaRegion;
    fn deref(&self) -> &DmaRegion {
        &self.region
    }
}

impl Drop for PoolMemory {
    fn drop(&mut self) {
        if self.lent_at_drop > 0 {
            tracing::warn!(
                pool = self.name,
                lent = self.lent_at_drop,
                bytes = self.region.len(),
                "pool memory leaked (left mapped): buffers never came back"
            );
            return;
        }
        // SAFETY: dropped once, here, and never used again (we are being
        // dropped); no buffer is lent out, so no Buf points into it.
        unsafe { ManuallyDrop::drop(&mut self.region) }
    }
}

struct Shared {
    name: &'static str,
    geom: Geometry,
    /// Free buffers not in the owner cache nor the spill list. Capacity =
    /// `total`.
    ring: ArrayQueue<u32>,
    foreign: ForeignReturn,
    /// Batched foreign returns, drained by the owner's refill.
    spill: TimedMutex<Vec<u32>>,
    /// `spill.len()` as of the last lock release: lets the owner skip the
    /// lock when the spill list is empty (a stale value only delays).
    spill_hint: AtomicUsize,
    /// Checked mode: `true` while buffer `idx` is lent out.
    lent: Option<Box<[AtomicBool]>>,
    recycle_ring: AtomicU64,
    recycle_ring_full: AtomicU64,
    /// The buffers themselves; unmapped and freed when the last handle
    /// goes, if every buffer is home.
    region: PoolMemory,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The owner is gone and flushed its cache: what is not in the ring
        // or the spill list is lent out.
        let home = self.shared_free();
        self.region.lent_at_drop = (self.geom.total as usize).saturating_sub(home);
    }
}

impl Shared {
    /// Checked mode: marks `idx` free; false if it already was.
    fn mark_free(&self, idx: u32) -> bool {
        match &self.lent {
            Some(lent) => lent[idx as usize].swap(false, Relaxed),
            None => true,
        }
    }

    /// Checked mode: marks `idx` lent; false if it already was.
    fn mark_lent(&self, idx: u32) -> bool {
        match &self.lent {
            Some(lent) => !lent[idx as usize].swap(true, Relaxed),
            None => true,
        }
    }

    /// Validates a return (range, address, checked-mode state).
    #[inline]
    fn accept(&self, buf: &Buf) -> bool {
        let verdict = match self.geom.check(buf) {
            Ok(()) if !self.mark_free(buf.idx()) => Err(Refusal::DoubleReturn),
            v => v,
        };
        match verdict {
            Ok(()) => true,
            Err(why) => {
                self.refuse(buf.idx(), buf.iova(), why);
                false
            }
        }
    }

    /// Puts a validated free buffer into the ring.
    #[inline]
    fn push(&self, idx: u32) -> bool {
        if self.ring.push(idx).is_ok() {
            return true;
        }
        self.refuse(idx, self.geom.iova(idx), Refusal::RingFull);
        false
    }

    #[cold]
    fn refuse(&self, idx: u32, iova: u64, why: Refusal) {
        self.recycle_ring_full.fetch_add(1, Relaxed);
        tracing::error!(
            pool = self.name,
            idx,
            iova = format_args!("{iova:#x}"),
            "buffer return refused: {}",
            why.as_str()
        );
    }
}

impl Shared {
    fn spilled(&self) -> usize {
        self.spill.peek(|v| v.len())
    }

    /// Free buffers in the ring and the spill list.
    fn shared_free(&self) -> usize {
        self.ring.len() + self.spilled()
    }

    /// The batched foreign path: one lock for the whole batch.
    fn give_back_batched(&self, bufs: &mut Vec<Buf>) -> u64 {
        if bufs.is_empty() {
            return 0;
        }
        let mut accepted = 0;
        let mut spill = self.spill.lock();
        // Free buffers never exceed `total`; more means a double return (or
        // a buffer of another pool). Computed once per batch: the owner
        // only ever makes the ring hold fewer while we hold the lock, or
        // moves cache buffers into it, which were free already.
        let mut room = (self.geom.total as usize).saturating_sub(self.ring.len() + spill.len());
        for buf in bufs.drain(..) {
            if !self.accept(&buf) {
                continue;
            }
            if room == 0 {
                self.refuse(buf.idx(), buf.iova(), Refusal::RingFull);
                continue;
            }
            room -= 1;
            spill.push(buf.idx());
            accepted += 1;
        }
        self.spill_hint.store(spill.len(), Relaxed);
        accepted
    }
}

impl BufReturn for Shared {
    fn give_back(&self, bufs: &mut Vec<Buf>) {
        let accepted = match self.foreign {
            ForeignReturn::Batched => self.give_back_batched(bufs),
            ForeignReturn::Ring => {
                let mut accepted = 0;
                for buf in bufs.drain(..) {
                    if self.accept(&buf) && self.push(buf.idx()) {
                        accepted += 1;
                    }
                }
                accepted
            }
        };
        // One shared-counter update per batch, not per buffer.
        if accepted > 0 {
            self.recycle_ring.fetch_add(accepted, Relaxed);
        }
    }
}

/// Owner counters: plain integers, only the owner thread touches them.
/// Shared by [`PagePool`] and the header pool strategies.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OwnerStats {
    pub alloc_fast: u64,
    pub alloc_slow: u64,
    pub alloc_refill: u64,
    pub alloc_empty: u64,
    pub recycle_cached: u64,
    pub recycle_cache_full: u64,
    pub released: u64,
}

impl OwnerStats {
    /// The end of a refill: counts the buffers that reached the owner's
    /// cache and hands out one, or counts the allocation as failed.
    pub(crate) fn refilled(&mut self, cache: &mut Vec<u32>) -> Option<u32> {
        self.alloc_refill += cache.len() as u64;
        let idx = cache.pop();
        if idx.is_none() {
            self.alloc_empty += 1;
        }
        idx
    }
}

/// Payload page pool: one buffer per 4 KiB page, `headroom` bytes in. The
/// value is the owner's handle (cache and counters): it is `Send` but not
/// shared; other threads return buffers through [`BufPool::returner`].
///
/// Dropping the owner flushes its cache to the shared ring and warns if
/// buffers are still lent out; the memory stays mapped until every returner
/// is gone too, and if a buffer never came back it is never unmapped nor
/// freed (leaked, with a warning), so no [`Buf`] can outlive its bytes.
pub struct PagePool {
    shared: Arc<Shared>,
    /// Free buffers, hottest last (LIFO).
    cache: Vec<u32>,
    cache_size: usize,
    bulk: usize,
    /// Copy of `shared.geom`, so the fast path does not chase the Arc.
    geom: Geometry,
    checked: bool,
    stats: OwnerStats,
    torn_down: bool,
}

impl PagePool {
    /// Allocates and maps `cfg.buffers` pages.
    pub fn new(space: &Arc<DmaSpace>, cfg: PagePoolConfig) -> Result<Self, PoolError> {
        let PagePoolConfig {
            buffers,
            buf_len,
            headroom,
            cache_size,
            bulk,
            checked,
            foreign,
        } = cfg;
        let size_ok = (1024..=PAGE_SIZE).contains(&buf_len) && buf_len % 1024 == 0;
        if !size_ok || headroom % 2 != 0 || buf_len + headroom > PAGE_SIZE {
            return Err(PoolError::BufLen { buf_len, headroom });
        }
        let layout = PoolLayout::new(buf_len, headroom, PAGE_SIZE);
        Self::create(
            space, "page", layout, buffers, cache_size, bulk, checked, foreign,
        )
    }
}

impl PagePool {
    #[allow(clippy::too_many_arguments)]
    fn create(
        space: &Arc<DmaSpace>,
        name: &'static str,
        layout: PoolLayout,
        buffers: usize,
        cache_size: usize,
        bulk: usize,
        checked: bool,
        foreign: ForeignReturn,
    ) -> Result<Self, PoolError> {
        if !(1..=MAX_BUFFERS).contains(&buffers) {
            return Err(PoolError::BufferCount(buffers));
        }
        if bulk == 0 || bulk > cache_size {
            return Err(PoolError::Cache { cache_size, bulk });
        }
        let region = space.alloc(layout.pages(buffers) * PAGE_SIZE)?;
        let geom = Geometry {
            layout,
            total: buffers as u32,
            base_iova: region.iova(),
        };
        let ring = ArrayQueue::new(buffers);
        for idx in 0..buffers as u32 {
            // Cannot fail: the ring holds exactly `buffers` entries.
            let _ = ring.push(idx);
        }
        let lent = checked.then(|| (0..buffers).map(|_| AtomicBool::new(false)).collect());
        let shared = Shared {
            name,
            geom,
            ring,
            foreign,
            spill: TimedMutex::new(Vec::with_capacity(if foreign == ForeignReturn::Batched {
                buffers
            } else {
                0
            })),
            spill_hint: AtomicUsize::new(0),
            lent,
            recycle_ring: AtomicU64::new(0),
            recycle_ring_full: AtomicU64::new(0),
            region: PoolMemory::new(region, name),
        };
        tracing::debug!(
            pool = name,
            buffers,
            bytes = shared.region.len(),
            hugepage = shared.region.is_hugepage(),
            iova = format_args!("{:#x}", geom.base_iova),
            "DMA pool created"
        );
        Ok(PagePool {
            shared: Arc::new(shared),
            cache: Vec::with_capacity(cache_size),
            cache_size,
            bulk,
            geom,
            checked,
            stats: OwnerStats::default(),
            torn_down: false,
        })
    }

    /// How buffers sit in the pool memory.
    pub fn layout(&self) -> PoolLayout {
        self.geom.layout
    }

    /// Number of buffers in the pool.
    pub fn buffers(&self) -> usize {
        self.geom.total as usize
    }

    /// The pool memory (base address and IOVA of buffer 0's page).
    pub fn region(&self) -> &DmaRegion {
        &self.shared.region
    }

    /// Whether double returns are refused as they happen (see
    /// [`PagePoolConfig::checked`]).
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// Counters so far (foreign-path ones are a relaxed snapshot).
    pub fn stats(&self) -> PoolStats {
        let s = &self.stats;
        PoolStats {
            alloc_fast: s.alloc_fast,
            alloc_slow: s.alloc_slow,
            alloc_refill: s.alloc_refill,
            alloc_empty: s.alloc_empty,
            recycle_cached: s.recycle_cached,
            recycle_cache_full: s.recycle_cache_full,
            recycle_ring: self.shared.recycle_ring.load(Relaxed),
            recycle_ring_full: self.shared.recycle_ring_full.load(Relaxed),
            released: s.released,
        }
    }

    /// Figures of the spill-list lock (the batched foreign path and the
    /// owner's drains of it); zeros with [`ForeignReturn::Ring`].
    pub fn lock_stats(&self) -> LockStats {
        self.shared.spill.stats()
    }

    /// Whether at least `n` buffers are free (`buffers() - lent() >= n`),
    /// reading as little shared state as it can: the owner's cache first,
    /// then the ring's length (loads), and only then the spill list (its
    /// lock). For a per-round low-water check.
    #[inline]
    pub fn free_at_least(&self, n: usize) -> bool {
        if n > self.geom.total as usize {
            return false;
        }
        let cached = self.cache.len();
        if cached >= n {
            return true;
        }
        let ring = cached + self.shared.ring.len();
        ring >= n || ring + self.shared.spilled() >= n
    }

    /// Buffers currently lent out. Exact when no foreign return is in flight.
    pub fn lent(&self) -> usize {
        (self.geom.total as usize).saturating_sub(self.cache.len() + self.shared.shared_free())
    }

    /// Where every buffer is. With nothing lent and no return in flight,
    /// `lent == 0` proves every buffer came back.
    pub fn audit(&self) -> PoolAudit {
        let total = self.geom.total as usize;
        let (in_cache, in_ring) = (self.cache.len(), self.shared.shared_free());
        PoolAudit {
            total,
            in_cache,
            in_ring,
            lent: total.saturating_sub(in_cache + in_ring),
        }
    }

    /// Tears the owner down now (as Drop would) and returns the final
    /// counters, `released` included.
    pub fn close(mut self) -> PoolStats {
        self.teardown();
        self.stats()
    }

    fn teardown(&mut self) {
        if std::mem::replace(&mut self.torn_down, true) {
            return;
        }
        let n = self.cache.len();
        self.flush(n);
        self.stats.released = self.shared.shared_free() as u64;
        let lent = self.lent();
        if lent > 0 {
            tracing::warn!(
                pool = self.shared.name,
                lent,
                "pool owner closed with buffers still lent out; the memory stays mapped until every returner is gone"
            );
        }
    }

    /// Moves the `n` coldest cached buffers to the shared ring.
    fn flush(&mut self, n: usize) {
        for idx in self.cache.drain(..n) {
            self.shared.push(idx);
        }
    }

    /// Everything `alloc` does besides popping the cache in unchecked
    /// mode: refill, checked-mode bookkeeping. Out of line so the fast path
    /// stays small enough to inline into the ring code. `popped` is what the
    /// fast path took from the cache; it returns an index, not a `Buf`, so
    /// both paths meet in a register (a `Buf` would meet in a stack slot,
    /// which measurably lengthens the fast path).
    #[inline(never)]
    fn alloc_slow(&mut self, popped: Option<u32>) -> Option<u32> {
        let mut popped = popped;
        loop {
            let idx = match popped {
                Some(idx) => {
                    self.stats.alloc_fast += 1;
                    idx
                }
                None => self.refill()?,
            };
            // Checked mode refuses every double return, so a lent index in
            // the pool cannot happen; if it ever does, never lend it twice.
            if !self.checked || self.shared.mark_lent(idx) {
                return Some(idx);
            }
            tracing::error!(
                pool = self.shared.name,
                idx,
                "free list held a buffer that is lent out; skipped"
            );
            popped = self.cache.pop();
        }
    }

    /// The cache is empty: refill up to `bulk` buffers from the ring.
    fn refill(&mut self) -> Option<u32> {
        self.stats.alloc_slow += 1;
        if self.shared.spill_hint.load(Relaxed) > 0 {
            // Batched foreign returns first: one lock for up to `bulk`.
            let mut spill = self.shared.spill.lock();
            let take = spill.len().min(self.bulk - self.cache.len());
            let at = spill.len() - take;
            self.cache.extend(spill.drain(at..));
            self.shared.spill_hint.store(spill.len(), Relaxed);
        }
        fill_from(&self.shared.ring, &mut self.cache, self.bulk);
        self.stats.refilled(&mut self.cache)
    }

    /// Everything `recycle` does besides pushing a valid buffer into a
    /// cache with room in unchecked mode: full validation (counting and
    /// logging refusals), checked-mode bookkeeping, flushing a full cache.
    #[inline(never)]
    fn recycle_slow(&mut self, buf: Buf) {
        if !self.shared.accept(&buf) {
            return;
        }
        if self.cache.len() >= self.cache_size {
            self.stats.recycle_cache_full += self.bulk as u64;
            self.flush(self.bulk);
        }
        self.cache.push(buf.idx());
        self.stats.recycle_cached += 1;
    }

    #[inline(always)]
    fn buf_at(&self, idx: u32) -> Buf {
        // SAFETY: only valid indices (< total) enter the cache or the ring,
        // and the caller just took `idx` off them; the region stays
        // allocated while any buffer is lent (see `Shared`'s Drop).
        unsafe { self.geom.buf_at(self.shared.region.as_ptr(), idx) }
    }
}

// SAFETY: the pool's region holds buffer `idx` in page `idx` at
// `headroom` bytes in (payload layout: stride 4096, one buffer per page),
// is page-aligned (an anonymous mapping) and belongs to the shared state,
// which every returner holds: it stays mapped while the pool or any
// returner lives (and longer if a buffer never comes back).
unsafe impl driver::PageArea for PagePool {
    fn area(&self) -> (NonNull<u8>, usize) {
        let r = &self.shared.region;
        // A mapping's address is never null; `dangling` is unreachable.
        (
            NonNull::new(r.as_ptr()).unwrap_or(NonNull::dangling()),
            r.len(),
        )
    }
}

impl BufPool for PagePool {
    fn buf_len(&self) -> usize {
        self.geom.layout.buf_len
    }

    fn headroom(&self) -> usize {
        self.geom.layout.headroom
    }

    #[inline]
    fn alloc(&mut self) -> Option<Buf> {
        let idx = match self.cache.pop() {
            Some(idx) if !self.checked => {
                self.stats.alloc_fast += 1;
                idx
            }
            popped => self.alloc_slow(popped)?,
        };
        Some(self.buf_at(idx))
    }

    #[inline]
    fn alloc_bulk(&mut self, n: usize, mut f: impl FnMut(Buf)) -> usize {
        let mut got = 0;
        if !self.checked {
            // Straight off the cache, hottest first (as `alloc` pops), one
            // counter update for the lot. `drain` removes the indices even
            // if `f` panics, so none is ever lent twice.
            let keep = self.cache.len().saturating_sub(n);
            got = self.cache.len() - keep;
            self.stats.alloc_fast += got as u64;
            let (geom, base) = (self.geom, self.shared.region.as_ptr());
            for idx in self.cache.drain(keep..).rev() {
                // SAFETY: as in `buf_at`: `idx` came off the cache (valid,
                // free) and is lent to this handle alone.
                f(unsafe { geom.buf_at(base, idx) });
            }
        }
        // The cache ran dry (or checked mode): one at a time, refilling.
        while got < n {
            match self.alloc() {
                Some(b) => f(b),
                None => break,
            }
            got += 1;
        }
        got
    }

    #[inline]
    fn recycle(&mut self, buf: Buf) {
        if !self.checked && self.cache.len() < self.cache_size && self.geom.check(&buf).is_ok() {
            self.cache.push(buf.idx());
            self.stats.recycle_cached += 1;
        } else {
            self.recycle_slow(buf);
        }
    }

    #[inline]
    fn recycle_bulk(&mut self, bufs: impl Iterator<Item = Buf>) {
        if self.checked {
            bufs.for_each(|b| self.recycle_slow(b));
            return;
        }
        let geom = self.geom;
        let mut cached = 0;
        for buf in bufs {
            if self.cache.len() < self.cache_size && geom.check(&buf).is_ok() {
                self.cache.push(buf.idx());
                cached += 1;
            } else {
                self.recycle_slow(buf);
            }
        }
        self.stats.recycle_cached += cached;
    }

    fn returner(&self) -> Arc<dyn BufReturn> {
        self.shared.clone()
    }
}

impl Pool for PagePool {
    fn stats(&self) -> PoolStats {
        PagePool::stats(self)
    }
    fn lock_stats(&self) -> LockStats {
        PagePool::lock_stats(self)
    }
    fn audit(&self) -> PoolAudit {
        PagePool::audit(self)
    }
}

impl Drop for PagePool {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl std::fmt::Debug for PagePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagePool")
            .field("name", &self.shared.name)
            .field("layout", &self.geom.layout)
            .field("buffers", &self.geom.total)
            .field("base_iova", &format_args!("{:#x}", self.geom.base_iova))
            .field("in_cache", &self.cache.len())
            .field("in_ring", &self.shared.ring.len())
            .field("in_spill", &self.shared.spilled())
            .finish()
    }
}

/// Collects buffers on an application thread and gives them back to their
/// pool every `recycle_batch` buffers: one [`BufReturn::give_back`] call
/// (one lock acquisition on the batched path) per batch. `recycle_batch ==
/// 1` is one call per buffer, like a per-page return. Dropping it flushes.
pub struct Returner {
    ret: Arc<dyn BufReturn>,
    batch: Vec<Buf>,
    recycle_batch: usize,
}

impl Returner {
    /// `recycle_batch` must be 1..=[`MAX_RECYCLE_BATCH`].
    pub fn new(ret: Arc<dyn BufReturn>, recycle_batch: usize) -> Result<Self, PoolError> {
        if !(1..=MAX_RECYCLE_BATCH).contains(&recycle_batch) {
            return Err(PoolError::RecycleBatch(recycle_batch));
        }
        Ok(Returner {
            ret,
            batch: Vec::with_capacity(recycle_batch),
            recycle_batch,
        })
    }

    /// Queues one buffer; gives the batch back when it is full.
    #[inline]
    pub fn push(&mut self, buf: Buf) {
        self.batch.push(buf);
        if self.batch.len() >= self.recycle_batch {
            self.ret.give_back(&mut self.batch);
        }
    }

    /// Gives back whatever is queued.
    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.ret.give_back(&mut self.batch);
        }
    }

    /// Buffers queued and not yet given back.
    pub fn pending(&self) -> usize {
        self.batch.len()
    }

    pub fn recycle_batch(&self) -> usize {
        self.recycle_batch
    }
}

impl Drop for Returner {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for Returner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returner")
            .field("recycle_batch", &self.recycle_batch)
            .field("pending", &self.batch.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
