//! [`ZcQueue`]: a [`ZcStack`] driven over one port queue pair (RX ring, TX
//! ring, watchdog), the way an application's polling thread runs it.
//!
//! One [`ZcQueue::poll`] round: reclaim the pages the application returned
//! (before the RX ring refills, so they are the first reused), poll the RX
//! ring for a batch, feed every packet to the engine and recycle what it
//! left on the owner fast path, run the timers, and copy the queued frames
//! into TX buffers. The pool is *low* when fewer than half a ring's worth of
//! pages are free in it (pages posted to the ring and the ring's spares are
//! not free): the engine then copies payload instead of keeping pages, so
//! an application that holds many pages cannot starve the ring.

use super::{ZcConfig, ZcEvent, ZcStack};
use driver::{BufPool, RxBatch, TxBuf};
use pipeline::port::Health;
use pipeline::Queue;
use std::time::Instant;

/// Counters of the glue (the engine's are [`ZcStack::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZcQueueStats {
    /// `poll` calls.
    pub polls: u64,
    /// Frames taken from the RX ring.
    pub rx_frames: u64,
    /// Frames posted to the TX ring.
    pub tx_frames: u64,
    /// Times the TX ring (or its pool) could not take a frame; the frame
    /// stayed queued for the next round.
    pub tx_busy: u64,
    /// Frames needing more than 8 TX buffers (dropped; the engine never
    /// builds one at the MTUs it accepts).
    pub tx_too_long: u64,
    /// Rounds in which the pool was low (payload copied).
    pub pool_low_rounds: u64,
}

/// A [`ZcStack`] on a port's queue pair.
pub struct ZcQueue {
    q: Queue,
    zc: ZcStack,
    batch: RxBatch,
    budget: usize,
    low_water: usize,
    tx_bufs: Vec<TxBuf>,
    stats: ZcQueueStats,
}

/// Frames taken from the RX ring per poll.
const RX_BUDGET: usize = 64;
/// Most TX buffers one frame may take (a 9014-byte frame in 4 KiB ones
/// takes three).
const TX_MAX_BUFS: usize = 8;

impl ZcQueue {
    /// Needs a TX ring (`PortConfig::tx`). `cfg.max_pages` is capped at the
    /// page pool's size.
    pub fn new(mut q: Queue, mut cfg: ZcConfig) -> Result<Self, String> {
        if q.tx.is_none() {
            return Err(format!(
                "queue {} has no TX ring: open the port with PortConfig::tx",
                q.id()
            ));
        }
        let ring = q.rx.ring_size();
        cfg.max_pages = cfg.max_pages.min(q.rx.pools().0.buffers());
        let mut zc = ZcStack::new(cfg)?;
        zc.set_foreign_return(q.rx.pools().0.returner());
        let batch = q.new_batch(RX_BUDGET);
        Ok(ZcQueue {
            q,
            zc,
            batch,
            budget: RX_BUDGET,
            low_water: ring / 2,
            tx_bufs: Vec::new(),
            stats: ZcQueueStats::default(),
        })
    }

    /// One round; returns the number of frames received.
    pub fn poll(&mut self, now: Instant) -> usize {
        self.stats.polls += 1;
        let (pages, _) = self.q.rx.pools();
        self.zc.reclaim(|b| pages.recycle(b));
        let n = self.q.rx.poll(&mut self.batch, self.budget);
        self.stats.rx_frames += n as u64;
        let (pages, hdrs_pool) = self.q.rx.pools();
        let low = !pages.free_at_least(self.low_water);
        self.stats.pool_low_rounds += low as u64;
        self.zc.set_pool_low(low);
        let zc = &mut self.zc;
        self.batch.drain_packets(|pkt| {
            zc.rx(pkt, now);
            if let Some(h) = pkt.hdr.take() {
                hdrs_pool.recycle(h);
            }
            pages.recycle_bulk(pkt.segs.drain(..).map(|s| s.buf));
        });
        self.zc.poll(now);
        self.flush_tx();
        n
    }

    /// Copies queued frames into TX buffers and posts them.
    fn flush_tx(&mut self) {
        let Some(tx) = self.q.tx.as_mut() else {
            return;
        };
        tx.clean();
        let stats = &mut self.stats;
        let bufs = &mut self.tx_bufs;
        self.zc.transmit(|frame| {
            // A frame longer than a TX buffer (jumbo MTU) takes several
            // descriptors, EOP on the last.
            let blen = tx.buf_len().max(1);
            let need = frame.len().div_ceil(blen).max(1);
            if need > TX_MAX_BUFS {
                stats.tx_too_long += 1;
                return true;
            }
            if bufs.len() + need > tx.free_slots() {
                stats.tx_busy += 1;
                return false;
            }
            let first = bufs.len();
            for (i, piece) in frame.chunks(blen).enumerate() {
                let Some(mut buf) = tx.alloc() else {
                    for b in bufs.drain(first..) {
                        tx.free(b.buf);
                    }
                    stats.tx_busy += 1;
                    return false;
                };
                buf.as_mut_slice(piece.len()).copy_from_slice(piece);
                bufs.push(TxBuf {
                    buf,
                    len: piece.len() as u16,
                    eop: i + 1 == need,
                });
            }
            stats.tx_frames += 1;
            true
        });
        if !self.tx_bufs.is_empty() {
            tx.send(&mut self.tx_bufs);
            // Admission kept them within the free slots; a stopped ring
            // refuses them: the buffers go home, the peer retransmits.
            for b in self.tx_bufs.drain(..) {
                tx.free(b.buf);
            }
        }
    }

    /// The queue's health check (see [`Queue::check`]).
    pub fn check(&mut self, now: Instant) -> Health {
        self.q.check(now)
    }

    pub fn engine(&self) -> &ZcStack {
        &self.zc
    }

    pub fn engine_mut(&mut self) -> &mut ZcStack {
        &mut self.zc
    }

    pub fn next_event(&mut self) -> Option<ZcEvent> {
        self.zc.next_event()
    }

    pub fn stats(&self) -> &ZcQueueStats {
        &self.stats
    }

    /// Page pool of the RX ring (free pages, audit).
    pub fn page_pool(&mut self) -> &mut pipeline::PagePool {
        self.q.rx.pools().0
    }

    /// Gives the queue back with every page the engine held returned
    /// (pages the application still holds come back when it returns or
    /// drops them, through the pool's foreign path only if the engine is
    /// gone: return them before this).
    pub fn into_queue(mut self) -> Queue {
        let (pages, _) = self.q.rx.pools();
        self.zc.release_all(|b| pages.recycle(b));
        self.q.rx.recycle(&mut self.batch);
        self.q
    }
}
