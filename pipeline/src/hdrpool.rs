//! The header pool: [`HeaderPool`], the one [`driver::BufPool`] type for
//! header slots, whose return path follows a [`HdrPoolStrategy`] chosen in
//! its config (`packed` by default, the production choice; the others stay
//! selectable so `rxsink --hdr-pool` and `poolbench` can compare them on the
//! same code).
//!
//! This module owns the header memory (one [`DmaRegion`], header slots
//! packed `4096 / slot` per page, never freed while a slot is lent out),
//! the free-slot bookkeeping of each strategy and its lock figures. Why the
//! strategies exist: with header split and HW GRO the RX thread posts one
//! header slot per descriptor but only the first of a coalesced packet is
//! real; it recycles the n-1 dummies at once (owner [`BufPool::recycle`])
//! while the application returns the real ones ([`BufReturn::give_back`])
//! under the same lock (the "HW GRO dragon" in the project's reference
//! figures).
//!
//! | strategy | owner alloc | owner recycle (dummies) | foreign give_back |
//! |---|---|---|---|
//! | `locked` | lock per slot | lock per slot | lock per slot |
//! | `batched` | local cache, lock per `batch` refill | local cache, lock per `batch` flush | lock per call |
//! | `packed` | whole pages, slots carved with no atomics | one atomic decrement per run of slots of one page | one atomic decrement per run of slots of one page in the batch |
//! | `ring` | local cache, refill from an `ArrayQueue` | local cache, flush to the queue | one queue push per slot |
//!
//! `packed`: each page has one atomic count of its outstanding slots, set to
//! `per_page` when the owner takes the page. Every release decrements it
//! (the owner batches its own: consecutive recycles of slots of the same
//! page, which is what the RX ring's FIFO order produces, are counted in a
//! plain integer and applied with one decrement when the page changes);
//! only the release that brings it to zero touches shared state: the owner
//! keeps such a page in a local list (no lock, no shared write), a foreign
//! thread pushes it onto a lock-free page queue. So `packed` takes no lock
//! at all; its cost is at most one atomic per slot (one per run of slots of
//! the same page, on both sides) plus one queue operation per page. A page is reused only once all its slots are back, so one slot
//! held for long pins 4 KiB. A double return is detected only when it makes
//! a page count underflow.
//!
//! Every strategy reports, through [`Pool`], [`LockStats`] in the same
//! shape (lock-free ones report zeros) and a [`PoolAudit`] whose `lent == 0`
//! proves every slot came back.
//!
//! ```
//! use std::sync::Arc;
//! use driver::{BufPool, DmaError, DmaMapper, DmaSpace};
//! use pipeline::{HdrPoolStrategy, HeaderPool, HeaderPoolConfig, Pool};
//!
//! struct NoIommu;
//! impl DmaMapper for NoIommu {
//!     unsafe fn map(&self, _: u64, _: *mut u8, _: usize) -> Result<(), DmaError> { Ok(()) }
//!     fn unmap(&self, _: u64, _: usize) -> Result<(), DmaError> { Ok(()) }
//! }
//! let space = DmaSpace::new(Arc::new(NoIommu));
//! let strategy: HdrPoolStrategy = "packed".parse().unwrap();
//! let mut pool = HeaderPool::new(&space, HeaderPoolConfig { strategy, ..Default::default() })?;
//! assert_eq!(pool.strategy(), HeaderPoolConfig::default().strategy);
//! let (real, dummy) = (pool.alloc().unwrap(), pool.alloc().unwrap());
//! pool.recycle(dummy); // RX thread: dummy header of a coalesced packet
//! pool.returner().give_back(&mut vec![real]); // application thread
//! assert_eq!(pool.audit().lent, 0);
//! assert_eq!(pool.lock_stats().lock_acquisitions, 0);
//! # Ok::<(), pipeline::PoolError>(())
//! ```

use crate::lockstats::{LockStats, TimedMutex};
use crate::pool::{
    fill_from, Geometry, OwnerStats, Pool, PoolAudit, PoolError, PoolLayout, PoolMemory, PoolStats,
    Refusal, MAX_BUFFERS,
};
use crate::sync::{fence, AtomicU32};
use crossbeam_queue::ArrayQueue;
use driver::dma::PAGE_SIZE;
use driver::{Buf, BufPool, BufReturn, DmaRegion, DmaSpace};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How a [`HeaderPool`] takes slots back. `packed` in production (the
/// default, and rxsink's `--hdr-pool` default); the others for measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HdrPoolStrategy {
    /// One lock acquisition per alloc, per owner recycle, per foreign slot.
    Locked,
    /// Owner cache; one lock per batch on every path.
    Batched,
    /// 64 B slots packed in refcounted pages; no lock.
    Packed,
    /// Owner cache plus a lock-free bounded queue for returns.
    Ring,
}

impl HdrPoolStrategy {
    pub const ALL: [HdrPoolStrategy; 4] = [
        HdrPoolStrategy::Locked,
        HdrPoolStrategy::Batched,
        HdrPoolStrategy::Packed,
        HdrPoolStrategy::Ring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HdrPoolStrategy::Locked => "locked",
            HdrPoolStrategy::Batched => "batched",
            HdrPoolStrategy::Packed => "packed",
            HdrPoolStrategy::Ring => "ring",
        }
    }
}

impl std::str::FromStr for HdrPoolStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HdrPoolStrategy::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("header pool strategy must be locked, batched, packed or ring, not {s:?}")
            })
    }
}

impl std::fmt::Display for HdrPoolStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of a [`HeaderPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderPoolConfig {
    /// Return path; default `packed`.
    pub strategy: HdrPoolStrategy,
    /// Header slots wanted; rounded up to whole pages.
    pub buffers: usize,
    /// Slot size: 64..=960 in 64 B steps (SRRCTL.BSIZEHEADER); `packed`
    /// allows 64..=256 (16 to 64 slots per page).
    pub slot: usize,
    /// `batched` / `ring`: slots moved per refill and per flush; the owner
    /// cache holds `2 * batch`. 1..=1024.
    pub batch: usize,
}

impl Default for HeaderPoolConfig {
    fn default() -> Self {
        HeaderPoolConfig {
            strategy: HdrPoolStrategy::Packed,
            buffers: 4096,
            // Holds Ethernet + VLAN + IPv6 + the longest TCP header (118 B).
            slot: 128,
            batch: 64,
        }
    }
}

/// Outstanding-slot counts of packed pages: the one piece of shared state
/// the `packed` strategy touches per slot.
pub(crate) struct PageRefs {
    counts: Box<[AtomicU32]>,
}

/// What a release did to its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Release {
    /// Other slots of the page are still out.
    Held,
    /// This was the last slot: the caller now owns the whole page.
    Last,
    /// More slots came back than were out: `refused` of them are double
    /// returns, refused. If `last`, the rest completed the page (as for
    /// `Last`); otherwise the page had none out and stays as it was.
    /// Best effort: a double return can only be seen when it underflows.
    Underflow { last: bool, refused: u32 },
}

impl PageRefs {
    pub(crate) fn new(pages: usize) -> Self {
        PageRefs {
            counts: (0..pages).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The owner took free page `page` and will lend all `slots` of it.
    /// The page came through a queue or the owner's own list, so every
    /// earlier release happens-before this store.
    pub(crate) fn arm(&self, page: usize, slots: u32) {
        self.counts[page].store(slots, Ordering::Relaxed);
    }

    /// `n >= 1` slots of `page` came back.
    #[inline]
    pub(crate) fn release_n(&self, page: usize, n: u32) -> Release {
        // Release: our writes to the slots happen-before whoever reuses the
        // page; the last releaser's acquire fence pairs with every other's
        // release (as in Arc::drop).
        let prev = self.counts[page].fetch_sub(n, Ordering::Release);
        if prev == n {
            fence(Ordering::Acquire);
            Release::Last
        } else if prev < n {
            // Undo the excess only: the count ends at 0.
            self.counts[page].fetch_add(n - prev, Ordering::Relaxed);
            fence(Ordering::Acquire);
            Release::Underflow {
                last: prev > 0,
                refused: n - prev,
            }
        } else {
            Release::Held
        }
    }

    /// Sum of the outstanding counts (audits).
    pub(crate) fn outstanding(&self) -> usize {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Acquire) as usize)
            .sum()
    }
}

/// The part shared with returners: memory, shared free lists, counters.
struct Shared {
    strategy: HdrPoolStrategy,
    geom: Geometry,
    /// `locked` / `batched`: free slot indices.
    list: TimedMutex<Vec<u32>>,
    /// `ring`: free slot indices; `packed`: free page indices.
    queue: ArrayQueue<u32>,
    /// `packed`: per-page outstanding slots.
    refs: PageRefs,
    recycle_ring: AtomicU64,
    recycle_ring_full: AtomicU64,
    /// The slots; freed with the last handle only if every slot is home.
    region: PoolMemory,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The owner is gone and gave back its cache (or, `packed`, its
        // pages): every slot not in shared free state is lent out.
        let total = self.geom.total as usize;
        let home = match self.strategy {
            HdrPoolStrategy::Locked | HdrPoolStrategy::Batched => self.list.peek(|l| l.len()),
            HdrPoolStrategy::Ring => self.queue.len(),
            HdrPoolStrategy::Packed => self.queue.len() * self.per_page(),
        };
        self.region.lent_at_drop = total.saturating_sub(home);
    }
}

impl Shared {
    fn per_page(&self) -> usize {
        self.geom.layout.per_page
    }

    #[inline]
    fn check(&self, buf: &Buf) -> bool {
        match self.geom.check(buf) {
            Ok(()) => true,
            Err(why) => {
                self.refuse(buf.idx(), why);
                false
            }
        }
    }

    #[cold]
    fn refuse(&self, idx: u32, why: Refusal) {
        self.recycle_ring_full.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            pool = "header",
            strategy = self.strategy.name(),
            idx,
            "header slot return refused: {}",
            why.as_str()
        );
    }

    /// Pushes onto the locked list if there is room (more free slots than
    /// exist means a double return).
    #[inline]
    fn push_list(&self, list: &mut Vec<u32>, idx: u32) -> bool {
        if list.len() >= self.geom.total as usize {
            self.refuse(idx, Refusal::RingFull);
            return false;
        }
        list.push(idx);
        true
    }

    /// `packed`: `n` slots of `page` came back from a non-owner; the last
    /// release of a page puts it back on the queue. Returns how many were
    /// accepted.
    #[inline]
    fn release_foreign(&self, page: u32, n: u32) -> u64 {
        let first_idx = page * self.per_page() as u32;
        match self.refs.release_n(page as usize, n) {
            Release::Held => n as u64,
            Release::Last => {
                if self.queue.push(page).is_err() {
                    self.refuse(first_idx, Refusal::RingFull);
                }
                n as u64
            }
            Release::Underflow { last, refused } => {
                if last && self.queue.push(page).is_err() {
                    self.refuse(first_idx, Refusal::RingFull);
                }
                for _ in 0..refused {
                    self.refuse(first_idx, Refusal::DoubleReturn);
                }
                (n - refused) as u64
            }
        }
    }
}

impl BufReturn for Shared {
    fn give_back(&self, bufs: &mut Vec<Buf>) {
        let mut accepted = 0u64;
        match self.strategy {
            HdrPoolStrategy::Locked => {
                for buf in bufs.drain(..) {
                    if self.check(&buf) && self.push_list(&mut self.list.lock(), buf.idx()) {
                        accepted += 1;
                    }
                }
            }
            HdrPoolStrategy::Batched => {
                if !bufs.is_empty() {
                    let mut list = self.list.lock();
                    for buf in bufs.drain(..) {
                        if self.check(&buf) && self.push_list(&mut list, buf.idx()) {
                            accepted += 1;
                        }
                    }
                }
            }
            HdrPoolStrategy::Packed => {
                // Runs of slots of one page (consecutive real headers share
                // pages) cost one atomic per run, not per slot. A run never
                // exceeds a page, so a double return still underflows.
                let per_page = self.per_page() as u32;
                let (mut page, mut run) = (0u32, 0u32);
                for buf in bufs.drain(..) {
                    if !self.check(&buf) {
                        continue;
                    }
                    let p = self.geom.layout.page_of(buf.idx());
                    if run > 0 && (p != page || run >= per_page) {
                        accepted += self.release_foreign(page, run);
                        run = 0;
                    }
                    page = p;
                    run += 1;
                }
                if run > 0 {
                    accepted += self.release_foreign(page, run);
                }
            }
            HdrPoolStrategy::Ring => {
                for buf in bufs.drain(..) {
                    if !self.check(&buf) {
                        continue;
                    }
                    if self.queue.push(buf.idx()).is_ok() {
                        accepted += 1;
                    } else {
                        self.refuse(buf.idx(), Refusal::RingFull);
                    }
                }
            }
        }
        if accepted > 0 {
            self.recycle_ring.fetch_add(accepted, Ordering::Relaxed);
        }
    }
}

/// The header pool: header slots packed in pages, with the return path of
/// a [`HdrPoolStrategy`]. The value is the owner's handle (the RX
/// thread's); other threads return slots through [`BufPool::returner`].
/// Dropping the owner gives its free slots back to the shared state and
/// warns if slots are still lent out; the memory stays mapped until every
/// returner is gone too, and is never freed while a slot is lent out. Counters use the page_pool names
/// of [`PoolStats`]: `alloc_fast` = served without touching shared state,
/// `alloc_slow` = went to shared state, `recycle_cached` = owner recycles
/// accepted, `recycle_cache_full` = slots the owner flushed to shared
/// state, `recycle_ring` = foreign returns accepted, `recycle_ring_full` =
/// returns refused.
pub struct HeaderPool {
    shared: Arc<Shared>,
    geom: Geometry,
    strategy: HdrPoolStrategy,
    batch: usize,
    /// `batched` / `ring`: free slots, hottest last.
    cache: Vec<u32>,
    /// `packed`: page being carved and the next slot in it
    /// (`next_slot == per_page` when there is none).
    cur_page: u32,
    next_slot: u32,
    /// `packed`: pages whose last slot the owner released.
    pages: Vec<u32>,
    /// `packed`: owner releases of `owed_page` not yet applied to its count.
    owed_page: u32,
    owed: u32,
    stats: OwnerStats,
}

impl HeaderPool {
    pub fn new(space: &Arc<DmaSpace>, cfg: HeaderPoolConfig) -> Result<Self, PoolError> {
        let HeaderPoolConfig {
            strategy,
            buffers,
            slot,
            batch,
        } = cfg;
        if !(64..=960).contains(&slot) || !slot.is_multiple_of(64) {
            return Err(PoolError::SlotSize(slot));
        }
        if strategy == HdrPoolStrategy::Packed && slot > 256 {
            return Err(PoolError::PackedSlot(slot));
        }
        if !(1..=MAX_BUFFERS).contains(&buffers) {
            return Err(PoolError::BufferCount(buffers));
        }
        if !(1..=1024).contains(&batch) {
            return Err(PoolError::Cache {
                cache_size: 2 * batch,
                bulk: batch,
            });
        }
        let layout = PoolLayout::new(slot, 0, slot);
        let per_page = layout.per_page;
        let npages = layout.pages(buffers);
        let total = npages * per_page;
        if total > MAX_BUFFERS {
            return Err(PoolError::BufferCount(total));
        }
        let region = space.alloc(npages * PAGE_SIZE)?;
        let geom = Geometry {
            layout,
            total: total as u32,
            base_iova: region.iova(),
        };
        let (list, queue) = match strategy {
            HdrPoolStrategy::Locked | HdrPoolStrategy::Batched => {
                // Lowest index on top, so slots go out in address order.
                (
                    TimedMutex::new((0..total as u32).rev().collect()),
                    ArrayQueue::new(1),
                )
            }
            HdrPoolStrategy::Ring => {
                let q = ArrayQueue::new(total);
                (0..total as u32).for_each(|i| {
                    let _ = q.push(i);
                });
                (TimedMutex::new(Vec::new()), q)
            }
            HdrPoolStrategy::Packed => {
                let q = ArrayQueue::new(npages);
                (0..npages as u32).for_each(|p| {
                    let _ = q.push(p);
                });
                (TimedMutex::new(Vec::new()), q)
            }
        };
        let refs = PageRefs::new(if strategy == HdrPoolStrategy::Packed {
            npages
        } else {
            0
        });
        let shared = Shared {
            strategy,
            geom,
            list,
            queue,
            refs,
            recycle_ring: AtomicU64::new(0),
            recycle_ring_full: AtomicU64::new(0),
            region: PoolMemory::new(region, "header"),
        };
        Ok(HeaderPool {
            shared: Arc::new(shared),
            geom,
            strategy,
            batch,
            cache: Vec::with_capacity(2 * batch),
            cur_page: 0,
            next_slot: per_page as u32,
            pages: Vec::with_capacity(npages),
            owed_page: 0,
            owed: 0,
            stats: OwnerStats::default(),
        })
    }

    pub fn strategy(&self) -> HdrPoolStrategy {
        self.strategy
    }

    /// Header slots in the pool (whole pages).
    pub fn buffers(&self) -> usize {
        self.geom.total as usize
    }

    pub fn layout(&self) -> PoolLayout {
        self.geom.layout
    }

    /// The pool memory.
    pub fn region(&self) -> &DmaRegion {
        &self.shared.region
    }

    /// Lock figures of the shared free list (`locked`, `batched`); zeros for
    /// the lock-free strategies.
    pub fn lock_stats(&self) -> LockStats {
        match self.strategy {
            HdrPoolStrategy::Locked | HdrPoolStrategy::Batched => self.shared.list.stats(),
            HdrPoolStrategy::Packed | HdrPoolStrategy::Ring => LockStats::default(),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let s = &self.stats;
        PoolStats {
            alloc_fast: s.alloc_fast,
            alloc_slow: s.alloc_slow,
            alloc_refill: s.alloc_refill,
            alloc_empty: s.alloc_empty,
            recycle_cached: s.recycle_cached,
            recycle_cache_full: s.recycle_cache_full,
            recycle_ring: self.shared.recycle_ring.load(Ordering::Relaxed),
            recycle_ring_full: self.shared.recycle_ring_full.load(Ordering::Relaxed),
            released: 0,
        }
    }

    /// Where every slot is. With no return in flight, `lent == 0` proves
    /// every slot came back. For `packed`, `in_ring` counts the slots of
    /// pages in the shared page queue and `in_cache` everything else that
    /// is not lent (owner pages, the uncarved rest of the current page,
    /// returned slots of pages not yet whole).
    pub fn audit(&self) -> PoolAudit {
        let total = self.geom.total as usize;
        let per_page = self.geom.layout.per_page;
        let (lent, in_ring) = match self.strategy {
            HdrPoolStrategy::Locked | HdrPoolStrategy::Batched => {
                let in_list = self.shared.list.peek(|l| l.len());
                (total.saturating_sub(in_list + self.cache.len()), in_list)
            }
            HdrPoolStrategy::Ring => {
                let q = self.shared.queue.len();
                (total.saturating_sub(q + self.cache.len()), q)
            }
            HdrPoolStrategy::Packed => {
                let unlent = per_page - self.next_slot as usize + self.owed as usize;
                (
                    self.shared.refs.outstanding().saturating_sub(unlent),
                    self.shared.queue.len() * per_page,
                )
            }
        };
        PoolAudit {
            total,
            in_cache: total.saturating_sub(lent + in_ring),
            in_ring,
            lent,
        }
    }

    #[inline(always)]
    fn buf_at(&self, idx: u32) -> Buf {
        // SAFETY: only valid indices (< total) are carved or enter a free
        // list, and the caller just took `idx` from one; the region stays
        // allocated while any slot is lent (see `Shared`'s Drop).
        unsafe { self.geom.buf_at(self.shared.region.as_ptr(), idx) }
    }

    /// `packed`: a new page to carve, owner list first, then the queue.
    fn next_page(&mut self) -> Option<u32> {
        self.stats.alloc_slow += 1;
        // Settle first: the owed page may be the one we are about to arm,
        // and the owner's pending releases may complete a page.
        self.settle_owed();
        let page = self.pages.pop().or_else(|| self.shared.queue.pop());
        match page {
            Some(p) => {
                let per_page = self.geom.layout.per_page;
                self.shared.refs.arm(p as usize, per_page as u32);
                self.stats.alloc_refill += per_page as u64;
                self.cur_page = p;
                self.next_slot = 0;
                Some(p)
            }
            None => {
                self.stats.alloc_empty += 1;
                None
            }
        }
    }

    /// `packed`: applies the owner's pending releases of `owed_page`.
    /// Double returns among them are refused and counted (and taken off
    /// `recycle_cached`).
    fn settle_owed(&mut self) {
        let (page, n) = (self.owed_page, std::mem::take(&mut self.owed));
        if n == 0 {
            return;
        }
        match self.shared.refs.release_n(page as usize, n) {
            Release::Held => {}
            Release::Last => self.pages.push(page),
            Release::Underflow { last, refused } => {
                if last {
                    self.pages.push(page);
                }
                self.stats.recycle_cached -= refused as u64;
                for _ in 0..refused {
                    self.shared.refuse(
                        page * self.geom.layout.per_page as u32,
                        Refusal::DoubleReturn,
                    );
                }
            }
        }
    }

    /// `packed`, at teardown: applies the owner's pending releases, releases
    /// the uncarved rest of the current page (never lent) and puts every
    /// whole page the owner holds back on the shared queue, so the shared
    /// state alone knows which slots are home.
    fn give_back_pages(&mut self) {
        self.settle_owed();
        let per_page = self.geom.layout.per_page as u32;
        let rest = per_page.saturating_sub(self.next_slot);
        if rest > 0 {
            self.next_slot = per_page;
            match self.shared.refs.release_n(self.cur_page as usize, rest) {
                Release::Last | Release::Underflow { last: true, .. } => {
                    self.pages.push(self.cur_page)
                }
                Release::Held | Release::Underflow { last: false, .. } => {}
            }
        }
        for p in self.pages.drain(..) {
            if self.shared.queue.push(p).is_err() {
                self.shared.refuse(p * per_page, Refusal::RingFull);
            }
        }
    }

    /// Everything `recycle` does besides counting one more owner release of
    /// the page being counted (`packed`): validation with refusals, a new
    /// page (settling the previous one's count), the other strategies.
    #[inline(never)]
    fn recycle_slow(&mut self, buf: Buf) {
        if !self.shared.check(&buf) {
            return;
        }
        let ok = match self.strategy {
            HdrPoolStrategy::Locked => self
                .shared
                .push_list(&mut self.shared.list.lock(), buf.idx()),
            HdrPoolStrategy::Batched | HdrPoolStrategy::Ring => {
                if self.cache.len() >= 2 * self.batch {
                    self.flush(self.batch);
                }
                self.cache.push(buf.idx());
                true
            }
            HdrPoolStrategy::Packed => {
                let page = self.geom.layout.page_of(buf.idx());
                // No atomic while recycles stay on one page; the count
                // cannot reach zero early because it still includes `owed`.
                // A run longer than a page means a double return: settle
                // then, so the count's underflow check sees it.
                if page != self.owed_page || self.owed >= self.geom.layout.per_page as u32 {
                    self.settle_owed();
                }
                self.owed_page = page;
                self.owed += 1;
                true
            }
        };
        if ok {
            self.stats.recycle_cached += 1;
        }
    }

    /// `batched` / `ring`: refill the empty cache.
    fn refill(&mut self) -> Option<u32> {
        self.stats.alloc_slow += 1;
        match self.strategy {
            HdrPoolStrategy::Batched => {
                let mut list = self.shared.list.lock();
                let at = list.len().saturating_sub(self.batch);
                self.cache.extend(list.drain(at..).rev());
            }
            _ => fill_from(&self.shared.queue, &mut self.cache, self.batch),
        }
        self.stats.refilled(&mut self.cache)
    }

    /// `batched` / `ring`: moves the `n` coldest cached slots to shared state.
    fn flush(&mut self, n: usize) {
        let n = n.min(self.cache.len());
        self.stats.recycle_cache_full += n as u64;
        match self.strategy {
            HdrPoolStrategy::Batched => {
                let mut list = self.shared.list.lock();
                for idx in self.cache.drain(..n) {
                    self.shared.push_list(&mut list, idx);
                }
            }
            _ => {
                for idx in self.cache.drain(..n) {
                    if self.shared.queue.push(idx).is_err() {
                        self.shared.refuse(idx, Refusal::RingFull);
                    }
                }
            }
        }
    }
}

impl BufPool for HeaderPool {
    fn buf_len(&self) -> usize {
        self.geom.layout.buf_len
    }

    #[inline]
    fn alloc(&mut self) -> Option<Buf> {
        let idx = match self.strategy {
            HdrPoolStrategy::Packed => {
                let per_page = self.geom.layout.per_page as u32;
                if self.next_slot >= per_page {
                    self.next_page()?;
                } else {
                    self.stats.alloc_fast += 1;
                }
                let idx = self.cur_page * per_page + self.next_slot;
                self.next_slot += 1;
                idx
            }
            HdrPoolStrategy::Locked => {
                self.stats.alloc_slow += 1;
                match self.shared.list.lock().pop() {
                    Some(i) => {
                        self.stats.alloc_refill += 1;
                        i
                    }
                    None => {
                        self.stats.alloc_empty += 1;
                        return None;
                    }
                }
            }
            HdrPoolStrategy::Batched | HdrPoolStrategy::Ring => match self.cache.pop() {
                Some(i) => {
                    self.stats.alloc_fast += 1;
                    i
                }
                None => self.refill()?,
            },
        };
        Some(self.buf_at(idx))
    }

    #[inline]
    fn alloc_bulk(&mut self, n: usize, mut f: impl FnMut(Buf)) -> usize {
        let mut got = 0;
        if self.strategy != HdrPoolStrategy::Packed {
            while got < n {
                match self.alloc() {
                    Some(b) => f(b),
                    None => break,
                }
                got += 1;
            }
            return got;
        }
        // `packed`: runs of consecutive slots of the page being carved.
        let per_page = self.geom.layout.per_page as u32;
        while got < n {
            let mut slow = 0;
            if self.next_slot >= per_page {
                if self.next_page().is_none() {
                    break;
                }
                // As in `alloc`: the allocation that took a page is slow.
                slow = 1;
            }
            let run = (per_page - self.next_slot).min((n - got) as u32);
            let first = self.cur_page * per_page + self.next_slot;
            // Carved before any is handed out, so a panicking `f` cannot
            // make a slot go out twice.
            self.next_slot += run;
            self.stats.alloc_fast += (run - slow) as u64;
            // The geometry in locals: `f` may write anywhere, so fields
            // read through `self` would be reloaded for every slot.
            let (geom, base) = (self.geom, self.shared.region.as_ptr());
            for idx in first..first + run {
                // SAFETY: as in `buf_at`: `idx` was just carved off the
                // current page (valid, never lent since the page was armed)
                // and is lent to this handle alone.
                f(unsafe { geom.buf_at(base, idx) });
            }
            got += run as usize;
        }
        got
    }

    #[inline(always)]
    fn recycle(&mut self, buf: Buf) {
        // `packed` fast path, inlined into the ring: a valid slot of the
        // page whose releases are being counted, run shorter than a page.
        // No atomic, no call; everything else goes out of line.
        let idx = buf.idx();
        if self.strategy == HdrPoolStrategy::Packed
            && self.owed < self.geom.layout.per_page as u32
            && self.geom.check(&buf).is_ok()
            && self.geom.layout.page_of(idx) == self.owed_page
        {
            self.owed += 1;
            self.stats.recycle_cached += 1;
        } else {
            self.recycle_slow(buf);
        }
    }

    #[inline]
    fn recycle_bulk(&mut self, bufs: impl Iterator<Item = Buf>) {
        if self.strategy != HdrPoolStrategy::Packed {
            bufs.for_each(|b| self.recycle(b));
            return;
        }
        // As `recycle`, with the count of the page being released in
        // locals (written back around the slow path, which may settle it).
        let (geom, per_page) = (self.geom, self.geom.layout.per_page as u32);
        let (mut page, mut owed, mut cached) = (self.owed_page, self.owed, 0);
        for buf in bufs {
            if owed < per_page && geom.check(&buf).is_ok() && geom.layout.page_of(buf.idx()) == page
            {
                owed += 1;
                cached += 1;
            } else {
                (self.owed_page, self.owed) = (page, owed);
                self.recycle_slow(buf);
                (page, owed) = (self.owed_page, self.owed);
            }
        }
        (self.owed_page, self.owed) = (page, owed);
        self.stats.recycle_cached += cached;
    }

    fn returner(&self) -> Arc<dyn BufReturn> {
        self.shared.clone()
    }
}

impl Pool for HeaderPool {
    fn stats(&self) -> PoolStats {
        HeaderPool::stats(self)
    }
    fn lock_stats(&self) -> LockStats {
        HeaderPool::lock_stats(self)
    }
    fn audit(&self) -> PoolAudit {
        HeaderPool::audit(self)
    }
}

impl Drop for HeaderPool {
    fn drop(&mut self) {
        match self.strategy {
            HdrPoolStrategy::Batched | HdrPoolStrategy::Ring => {
                let n = self.cache.len();
                self.flush(n);
            }
            HdrPoolStrategy::Packed => self.give_back_pages(),
            HdrPoolStrategy::Locked => {}
        }
        let lent = self.audit().lent;
        if lent > 0 {
            tracing::warn!(
                strategy = self.strategy.name(),
                lent,
                "header pool owner closed with slots still lent out"
            );
        }
    }
}

impl std::fmt::Debug for HeaderPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderPool")
            .field("strategy", &self.strategy)
            .field("layout", &self.geom.layout)
            .field("buffers", &self.geom.total)
            .field("audit", &self.audit())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
