//! Chunks handed to the application and the way back: [`ZcChunk`],
//! [`ZcReturner`] and the state both share with the engine ([`Shared`]).
//!
//! A returned chunk carries two things home: its page (to be recycled on
//! the owner thread's fast path) and its byte count (to reopen its
//! connection's window). Pages go through one of two containers, drained by
//! the owner in [`ZcStack::reclaim`](super::ZcStack::reclaim):
//!
//! - `ring`: a single-producer single-consumer refill ring per returner
//!   (`rtrb`), sized to hold every page the engine may have out at once
//!   ([`ZcConfig::max_pages`](super::ZcConfig)), so a push never finds it
//!   full ([`ReturnMode::Ring`]). A batch is published with one release
//!   store of the ring's tail, no read-modify-write; the owner drains every
//!   ring in one pass, one store of each ring's head. Each page travels
//!   with its chunk's reference to this shared state, which the owner hands
//!   to a later chunk, so a chunk's trip costs no reference-count update;
//! - `locked`: a `Mutex<Vec<Buf>>` free list, one lock per returned batch
//!   ([`ReturnMode::Locked`]), plus a flag that tells the owner whether it
//!   needs to look (so a round in ring mode takes no lock).
//!
//! Bytes go through one `AtomicU64` per connection slot: the generation of
//! the slot's connection in the top 24 bits, the bytes returned so far
//! (wrapping at 2^40) in the rest. A returner adds with a compare-exchange
//! that fails when the generation moved on (the connection is gone, its
//! slot reused), so a late return never opens a stranger's window; then it
//! raises `credited`, so the owner reads the words only after a return.

use super::ConnId;
use driver::{Buf, BufReturn};
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Bits of a credit word that count bytes.
pub(crate) const CREDIT_BITS: u32 = 40;
pub(crate) const CREDIT_MASK: u64 = (1 << CREDIT_BITS) - 1;
/// Generations are kept to the bits left over.
pub(crate) const GEN_MASK: u32 = (1 << (64 - CREDIT_BITS)) - 1;

/// What the engine and every returner share.
pub(crate) struct Shared {
    /// Slots of each refill ring: every page the engine may have out.
    ring_size: usize,
    /// Consumer ends of refill rings the engine has not adopted yet
    /// (returners made since its last reclaim) and, once the engine is
    /// gone, of all of them (drained under this lock from then on).
    rings: Mutex<Vec<Consumer<Refill>>>,
    /// A ring was added to `rings`.
    rings_added: AtomicBool,
    /// Pages a `Ring` push could not place (only if the bound was broken),
    /// pages of the `Locked` mode and of chunks dropped unreturned.
    pub(crate) locked: Mutex<Vec<Buf>>,
    /// Set after pages went onto `locked`; the owner clears it before it
    /// takes the list.
    locked_queued: AtomicBool,
    /// Per connection slot: generation << 40 | returned bytes (mod 2^40).
    pub(crate) credits: Box<[AtomicU64]>,
    /// Set after a credit word grew; the owner clears it before it reads
    /// them.
    credited: AtomicBool,
    /// Set when the engine is gone: where pages go from then on (the page
    /// pool's foreign return path), so a chunk outliving the engine still
    /// gets home; `None` when it had none (they stay on `locked`).
    pub(crate) orphan: OnceLock<Option<Arc<dyn BufReturn>>>,
}

/// What a refill ring carries: a page, and the chunk's reference to the
/// shared state, which the engine reuses for a later chunk (so a chunk
/// costs no reference-count update on either side).
pub(crate) type Refill = (Buf, Arc<Shared>);

impl Shared {
    pub(crate) fn new(pages: usize, slots: usize) -> Arc<Shared> {
        Arc::new(Shared {
            ring_size: pages.max(1),
            rings: Mutex::new(Vec::new()),
            rings_added: AtomicBool::new(false),
            locked: Mutex::new(Vec::new()),
            locked_queued: AtomicBool::new(false),
            credits: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            credited: AtomicBool::new(false),
            orphan: OnceLock::new(),
        })
    }

    /// A new refill ring: its producer end for a returner; its consumer
    /// end waits in `rings` for the engine.
    fn new_ring(&self) -> Producer<Refill> {
        let (p, c) = RingBuffer::new(self.ring_size);
        lock(&self.rings).push(c);
        self.rings_added.store(true, Ordering::Release);
        p
    }

    /// Owner side: moves the consumer ends of new rings into `into`, and
    /// drops those whose returner is gone and that are empty.
    #[inline]
    pub(crate) fn adopt_rings(&self, into: &mut Vec<Consumer<Refill>>) {
        // Acquire: the ring pushed before the flag is on the list we take.
        if self.rings_added.load(Ordering::Acquire) {
            self.adopt_new_rings(into);
        }
    }

    #[cold]
    fn adopt_new_rings(&self, into: &mut Vec<Consumer<Refill>>) {
        self.rings_added.store(false, Ordering::Relaxed);
        into.append(&mut lock(&self.rings));
        into.retain(|c| !(c.is_abandoned() && c.is_empty()));
    }

    /// Owner side: whether the locked list may hold pages (clears the
    /// flag: take the list after a true).
    #[inline]
    pub(crate) fn take_locked_flag(&self) -> bool {
        self.locked_queued.load(Ordering::Relaxed)
            && self.locked_queued.swap(false, Ordering::Acquire)
    }

    /// Owner side: whether a credit word may have grown (clears the flag:
    /// read the words after a true).
    #[inline]
    pub(crate) fn take_credited_flag(&self) -> bool {
        self.credited.load(Ordering::Relaxed) && self.credited.swap(false, Ordering::Acquire)
    }

    /// Adds `bytes` to `conn`'s returned count unless its slot moved on.
    /// Raise `credited` after (see [`Shared::credited_done`]).
    fn credit(&self, conn: ConnId, bytes: u64) {
        let Some(c) = self.credits.get(conn.slot as usize) else {
            return;
        };
        let gen = (conn.gen & GEN_MASK) as u64;
        let mut cur = c.load(Ordering::Relaxed);
        loop {
            if cur >> CREDIT_BITS != gen {
                return;
            }
            let new = (gen << CREDIT_BITS) | (cur.wrapping_add(bytes) & CREDIT_MASK);
            match c.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// After credits: tells the owner to read the words.
    fn credited_done(&self) {
        self.credited.store(true, Ordering::Release);
    }

    /// Puts pages on the locked list (one lock) and tells the owner.
    fn put_locked(&self, bufs: &mut Vec<Buf>) {
        let mut list = lock(&self.locked);
        list.append(bufs);
        self.locked_queued.store(true, Ordering::Release);
    }

    /// Puts one page back without a batch (a chunk dropped unreturned:
    /// any thread, so not through a ring, which has one producer).
    fn put_page(&self, buf: Buf) {
        self.put_locked(&mut vec![buf]);
        self.after_push();
    }

    /// After pages went into a ring or the list: if the engine is gone,
    /// nobody drains them but us. The fence pairs with the one in
    /// [`Shared::orphan_all`]: either the engine's final drain sees our
    /// pages, or we see its return path.
    fn after_push(&self) {
        fence(Ordering::SeqCst);
        if let Some(r) = self.orphan.get() {
            self.drain_orphaned(r.as_deref());
        }
    }

    /// Once the engine is gone: every ring (under the `rings` lock: there
    /// is more than one consumer now) and the list go to `r`; without one
    /// the rings' pages join the list (where they stay, as documented for
    /// an engine without a foreign return), so no ring keeps a reference
    /// to the shared state alive.
    fn drain_orphaned(&self, r: Option<&dyn BufReturn>) {
        let mut v: Vec<Buf> = Vec::new();
        for c in lock(&self.rings).iter_mut() {
            drain_ring(c, |(b, _)| v.push(b));
        }
        let mut list = lock(&self.locked);
        match r {
            Some(r) => {
                v.append(&mut list);
                drop(list);
                r.give_back(&mut v);
            }
            None => list.append(&mut v),
        }
    }

    /// The engine is going away with its ring ends `rings`: from now on
    /// pages go to `ret` (or stay on the list without one); the ones
    /// already returned go there now.
    pub(crate) fn orphan_all(&self, rings: Vec<Consumer<Refill>>, ret: Option<Arc<dyn BufReturn>>) {
        lock(&self.rings).extend(rings);
        let _ = self.orphan.set(ret);
        fence(Ordering::SeqCst);
        if let Some(r) = self.orphan.get() {
            self.drain_orphaned(r.as_deref());
        }
    }
}

/// Takes every page in `ring` (one load of its tail, one store of its
/// head); returns how many.
pub(crate) fn drain_ring(ring: &mut Consumer<Refill>, mut f: impl FnMut(Refill)) -> usize {
    let n = ring.slots();
    if n == 0 {
        return 0;
    }
    match ring.read_chunk(n) {
        Ok(chunk) => {
            for b in chunk {
                f(b);
            }
            n
        }
        Err(_) => 0,
    }
}

/// A poisoned lock only means another thread panicked while holding it;
/// the list itself is still whole.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a chunk's bytes live.
pub(crate) enum Body {
    /// In a receive page, read in place.
    Page(Buf),
    /// Copied into the heap (the pool was short: see
    /// [`ZcStack::set_pool_low`](super::ZcStack::set_pool_low)).
    Copy(Vec<u8>),
    /// Already returned (only between `give_back` and drop).
    Gone,
}

/// In-order payload of one connection, read in place: a range of one
/// receive page (or, under pool pressure, of a heap copy).
///
/// Return it with [`ZcReturner::give_back`]; a chunk dropped instead is
/// returned on its own (one page, no batching), so no page is ever lost.
pub struct ZcChunk {
    pub(crate) body: Body,
    pub(crate) off: u32,
    pub(crate) len: u32,
    pub(crate) conn: ConnId,
    /// `None` only once a returner took it.
    pub(crate) shared: Option<Arc<Shared>>,
}

impl ZcChunk {
    /// The payload bytes.
    pub fn bytes(&self) -> &[u8] {
        let (off, len) = (self.off as usize, self.len as usize);
        match &self.body {
            Body::Page(b) => b.as_slice(off + len).get(off..).unwrap_or(&[]),
            Body::Copy(v) => v.get(off..off + len).unwrap_or(&[]),
            Body::Gone => &[],
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The connection the bytes belong to.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Whether the chunk starts on a 4 KiB boundary of device memory
    /// (`(iova + offset) % 4096 == 0`), as ncdevmem counts fragments.
    pub fn page_aligned(&self) -> bool {
        match &self.body {
            Body::Page(b) => (b.iova() + self.off as u64).is_multiple_of(4096),
            _ => false,
        }
    }

    /// Whether the bytes were copied out of the page (pool pressure).
    pub fn is_copy(&self) -> bool {
        matches!(self.body, Body::Copy(_))
    }

    /// The page, if the chunk still holds one (the engine's own use).
    pub(crate) fn take_page(&mut self) -> Option<Buf> {
        match std::mem::replace(&mut self.body, Body::Gone) {
            Body::Page(b) => Some(b),
            _ => None,
        }
    }
}

impl Drop for ZcChunk {
    fn drop(&mut self) {
        if matches!(self.body, Body::Gone) {
            return;
        }
        let Some(shared) = self.shared.take() else {
            return;
        };
        shared.credit(self.conn, self.len as u64);
        shared.credited_done();
        if let Some(b) = self.take_page() {
            shared.put_page(b);
        }
    }
}

impl std::fmt::Debug for ZcChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZcChunk")
            .field("conn", &self.conn)
            .field("off", &self.off)
            .field("len", &self.len)
            .field("copy", &self.is_copy())
            .finish()
    }
}

/// How a [`ZcReturner`] hands pages back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnMode {
    /// zcrx style: each batch of pages pushed into the returner's own
    /// lock-free refill ring (one release store per batch) that the owner
    /// drains; the application never takes a lock.
    Ring,
    /// devmem style: up to `batch` pages appended to a free list under one
    /// lock per call (`SO_DEVMEM_DONTNEED`).
    Locked,
}

/// What a [`ZcReturner`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReturnStats {
    /// Batches handed back (flushes).
    pub calls: u64,
    /// Of those, the batches handed back short of `batch` chunks (an idle
    /// or final flush), and the chunks they carried. Every other call
    /// carried exactly `batch` chunks.
    pub short_calls: u64,
    pub short_chunks: u64,
    /// Pages returned (copies count as none).
    pub pages: u64,
    /// Payload bytes returned (pages and copies).
    pub bytes: u64,
    /// Lock acquisitions the returning thread made.
    pub locks: u64,
}

impl std::ops::AddAssign for ReturnStats {
    fn add_assign(&mut self, o: ReturnStats) {
        self.calls += o.calls;
        self.short_calls += o.short_calls;
        self.short_chunks += o.short_chunks;
        self.pages += o.pages;
        self.bytes += o.bytes;
        self.locks += o.locks;
    }
}

/// Most chunks one [`ZcReturner`] batch holds (devmem's limit per call).
pub const MAX_RETURN_BATCH: usize = 1024;

/// The application's side of the return path: collects chunks and hands
/// them back every `batch` chunks. `Send`: it moves to the application's
/// thread. Dropping it flushes.
pub struct ZcReturner {
    shared: Arc<Shared>,
    mode: ReturnMode,
    /// The producer end of this returner's refill ring (`Ring` mode).
    ring: Option<Producer<Refill>>,
    batch: usize,
    /// Pages of this batch, each with its chunk's reference in `Ring`
    /// mode (`Locked` mode drops the reference at once, as the chunk
    /// would, not under the list's lock).
    pages: Vec<Refill>,
    locked_pages: Vec<Buf>,
    /// Bytes per connection in this batch, runs merged.
    credits: Vec<(ConnId, u64)>,
    queued: usize,
    stats: ReturnStats,
}

impl ZcReturner {
    pub(crate) fn new(shared: Arc<Shared>, mode: ReturnMode, batch: usize) -> ZcReturner {
        let batch = batch.clamp(1, MAX_RETURN_BATCH);
        let ring = (mode == ReturnMode::Ring).then(|| shared.new_ring());
        ZcReturner {
            shared,
            mode,
            ring,
            batch,
            pages: Vec::with_capacity(batch),
            locked_pages: Vec::new(),
            credits: Vec::new(),
            queued: 0,
            stats: ReturnStats::default(),
        }
    }

    /// Queues `chunk`; hands the batch back when `batch` chunks are queued.
    pub fn give_back(&mut self, mut chunk: ZcChunk) {
        let conn = chunk.conn;
        let len = chunk.len as u64;
        let shared = chunk.shared.take();
        if let Some(b) = chunk.take_page() {
            match (self.ring.is_some(), shared) {
                (true, Some(a)) => self.pages.push((b, a)),
                _ => self.locked_pages.push(b),
            }
        }
        chunk.body = Body::Gone;
        match self.credits.iter_mut().find(|(c, _)| *c == conn) {
            Some((_, n)) => *n += len,
            None => self.credits.push((conn, len)),
        }
        self.queued += 1;
        self.stats.bytes += len;
        if self.queued >= self.batch {
            self.flush();
        }
    }

    /// Hands back whatever is queued.
    pub fn flush(&mut self) {
        if self.queued == 0 {
            return;
        }
        self.stats.calls += 1;
        if self.queued < self.batch {
            self.stats.short_calls += 1;
            self.stats.short_chunks += self.queued as u64;
        }
        self.stats.pages += (self.pages.len() + self.locked_pages.len()) as u64;
        match &mut self.ring {
            Some(ring) => {
                // One release store of the tail for the whole batch.
                let n = self.pages.len().min(ring.slots());
                if n > 0 {
                    if let Ok(chunk) = ring.write_chunk_uninit(n) {
                        chunk.fill_from_iter(self.pages.drain(..n));
                    }
                }
                if !self.pages.is_empty() {
                    // Cannot happen while the engine keeps its bound;
                    // counted as a lock if it does.
                    self.stats.locks += 1;
                    self.locked_pages
                        .extend(self.pages.drain(..).map(|(b, _)| b));
                    self.shared.put_locked(&mut self.locked_pages);
                }
                self.shared.after_push();
            }
            None => {
                self.stats.locks += 1;
                let mut list = lock(&self.shared.locked);
                list.append(&mut self.locked_pages);
                self.shared.locked_queued.store(true, Ordering::Release);
                if let Some(Some(r)) = self.shared.orphan.get() {
                    r.give_back(&mut list);
                }
            }
        }
        // Pages first, then the bytes: the owner never sees a window open
        // for bytes whose pages it cannot yet reclaim.
        for (conn, n) in self.credits.drain(..) {
            self.shared.credit(conn, n);
        }
        self.shared.credited_done();
        self.queued = 0;
    }

    pub fn stats(&self) -> ReturnStats {
        self.stats
    }

    /// Chunks queued and not yet handed back.
    pub fn pending(&self) -> usize {
        self.queued
    }
}

impl Drop for ZcReturner {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for ZcReturner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZcReturner")
            .field("mode", &self.mode)
            .field("batch", &self.batch)
            .field("pending", &self.queued)
            .finish()
    }
}
