//! Chunks handed to the application and the way back: [`ZcChunk`],
//! [`ZcReturner`] and the state both share with the engine ([`Shared`]).
//!
//! A returned chunk carries two things home: its page (to be recycled on
//! the owner thread's fast path) and its byte count (to reopen its
//! connection's window). Pages go through one of two containers, drained by
//! the owner in [`ZcStack::reclaim`](super::ZcStack::reclaim):
//!
//! - `ring`: a lock-free `ArrayQueue<Buf>` sized to hold every page the
//!   engine may have out at once ([`ZcConfig::max_pages`](super::ZcConfig)),
//!   so a push never finds it full ([`ReturnMode::Ring`]);
//! - `locked`: a `Mutex<Vec<Buf>>` free list, one lock per returned batch
//!   ([`ReturnMode::Locked`]).
//!
//! Bytes go through one `AtomicU64` per connection slot: the generation of
//! the slot's connection in the top 24 bits, the bytes returned so far
//! (wrapping at 2^40) in the rest. A returner adds with a compare-exchange
//! that fails when the generation moved on (the connection is gone, its
//! slot reused), so a late return never opens a stranger's window.

use super::ConnId;
use crossbeam_queue::ArrayQueue;
use driver::{Buf, BufReturn};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Bits of a credit word that count bytes.
pub(crate) const CREDIT_BITS: u32 = 40;
pub(crate) const CREDIT_MASK: u64 = (1 << CREDIT_BITS) - 1;
/// Generations are kept to the bits left over.
pub(crate) const GEN_MASK: u32 = (1 << (64 - CREDIT_BITS)) - 1;

/// What the engine and every returner share.
pub(crate) struct Shared {
    pub(crate) ring: ArrayQueue<Buf>,
    /// Pages a `Ring` push could not place (only if the bound was broken)
    /// and pages of the `Locked` mode.
    pub(crate) locked: Mutex<Vec<Buf>>,
    /// Per connection slot: generation << 40 | returned bytes (mod 2^40).
    pub(crate) credits: Box<[AtomicU64]>,
    /// Set when the engine is gone: where pages go from then on (the page
    /// pool's foreign return path), so a chunk outliving the engine still
    /// gets home.
    pub(crate) orphan: OnceLock<Arc<dyn BufReturn>>,
}

impl Shared {
    pub(crate) fn new(pages: usize, slots: usize) -> Arc<Shared> {
        Arc::new(Shared {
            ring: ArrayQueue::new(pages.max(1)),
            locked: Mutex::new(Vec::new()),
            credits: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            orphan: OnceLock::new(),
        })
    }

    /// Adds `bytes` to `conn`'s returned count unless its slot moved on.
    pub(crate) fn credit(&self, conn: ConnId, bytes: u64) {
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

    /// Puts one page back without a batch (a chunk dropped unreturned).
    fn put_page(&self, buf: Buf) {
        if let Err(b) = self.ring.push(buf) {
            lock(&self.locked).push(b);
        }
        self.after_ring_push();
    }

    /// After pages went into the ring: if the engine is gone, nobody
    /// drains it but us. The fence pairs with the one in
    /// [`Shared::orphan_all`]: either the engine's final drain sees our
    /// pages, or we see its return path.
    fn after_ring_push(&self) {
        fence(Ordering::SeqCst);
        if let Some(r) = self.orphan.get() {
            let mut v: Vec<Buf> = std::iter::from_fn(|| self.ring.pop()).collect();
            v.append(&mut lock(&self.locked));
            r.give_back(&mut v);
        }
    }

    /// The engine is going away: from now on pages go to `ret`; the ones
    /// already returned go there now.
    pub(crate) fn orphan_all(&self, ret: Arc<dyn BufReturn>) {
        let _ = self.orphan.set(ret);
        fence(Ordering::SeqCst);
        if let Some(r) = self.orphan.get() {
            let mut v: Vec<Buf> = std::iter::from_fn(|| self.ring.pop()).collect();
            v.append(&mut lock(&self.locked));
            r.give_back(&mut v);
        }
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
    pub(crate) shared: Arc<Shared>,
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
        self.shared.credit(self.conn, self.len as u64);
        if let Some(b) = self.take_page() {
            self.shared.put_page(b);
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
    /// zcrx style: each page pushed into a lock-free refill ring that the
    /// owner drains; the application never takes a lock.
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
    batch: usize,
    pages: Vec<Buf>,
    /// Bytes per connection in this batch, runs merged.
    credits: Vec<(ConnId, u64)>,
    queued: usize,
    stats: ReturnStats,
}

impl ZcReturner {
    pub(crate) fn new(shared: Arc<Shared>, mode: ReturnMode, batch: usize) -> ZcReturner {
        let batch = batch.clamp(1, MAX_RETURN_BATCH);
        ZcReturner {
            shared,
            mode,
            batch,
            pages: Vec::with_capacity(batch),
            credits: Vec::new(),
            queued: 0,
            stats: ReturnStats::default(),
        }
    }

    /// Queues `chunk`; hands the batch back when `batch` chunks are queued.
    pub fn give_back(&mut self, mut chunk: ZcChunk) {
        let conn = chunk.conn;
        let len = chunk.len as u64;
        if let Some(b) = chunk.take_page() {
            self.pages.push(b);
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
        self.stats.pages += self.pages.len() as u64;
        match self.mode {
            ReturnMode::Ring => {
                for b in self.pages.drain(..) {
                    if let Err(b) = self.shared.ring.push(b) {
                        // Cannot happen while the engine keeps its bound;
                        // counted as a lock if it does.
                        self.stats.locks += 1;
                        lock(&self.shared.locked).push(b);
                    }
                }
                self.shared.after_ring_push();
            }
            ReturnMode::Locked => {
                self.stats.locks += 1;
                let mut list = lock(&self.shared.locked);
                list.append(&mut self.pages);
                if let Some(r) = self.shared.orphan.get() {
                    r.give_back(&mut list);
                }
            }
        }
        // Pages first, then the bytes: the owner never sees a window open
        // for bytes whose pages it cannot yet reclaim.
        for (conn, n) in self.credits.drain(..) {
            self.shared.credit(conn, n);
        }
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
