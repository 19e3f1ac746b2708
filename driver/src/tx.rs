//! The TX descriptor ring: post frames (one tail write per batch), clean
//! completed descriptors in blocks and recycle their buffers.
//!
//! Every descriptor asks for a status write-back (RS). Cleaning looks at the
//! DD bit of the last descriptor of a block of [`TX_CLEAN_BLOCK`] and frees
//! the whole block at once, as ixy does: the device completes descriptors in
//! order, so DD on the last implies all before it are done.

use crate::buf::{Buf, BufPool};
use crate::desc::{TxCmdTypeLen, TxOlinfo, TX_STATUS_DD};
use crate::device::Device;
use crate::dma::DmaSpace;
use crate::igb::{DescRing, IgbError, QueueRegs};
use crate::regs::*;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// Descriptors freed per clean step.
pub const TX_CLEAN_BLOCK: usize = 32;

#[derive(Clone, Debug)]
pub struct TxConfig {
    pub queue: u32,
    /// Descriptors in the ring: a power of two, 8..=4096.
    pub ring_size: usize,
}

impl Default for TxConfig {
    fn default() -> Self {
        TxConfig {
            queue: 0,
            ring_size: 512,
        }
    }
}

/// One buffer of a frame to send: `len` bytes at the start of `buf`.
/// `eop` marks the frame's last buffer.
#[derive(Debug)]
pub struct TxBuf {
    pub buf: Buf,
    pub len: u16,
    pub eop: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxStats {
    pub packets: u64,
    pub bytes: u64,
    pub descriptors: u64,
    pub cleaned: u64,
    pub doorbells: u64,
    /// Frames refused: a buffer longer than the pool's buffers, or a frame
    /// without EOP at the end of the list.
    pub invalid: u64,
    /// Descriptors given up when the queue was restarted after a device reset.
    pub restart_dropped: u64,
}

pub struct TxRing<P: BufPool> {
    dev: Arc<dyn Device>,
    ring: DescRing,
    next_clean: usize,
    next_post: usize,
    posted: Vec<Option<Buf>>,
    pool: P,
    queue: u32,
    stats: TxStats,
    stopped: bool,
}

impl<P: BufPool> TxRing<P> {
    pub fn new(
        dev: Arc<dyn Device>,
        space: &Arc<DmaSpace>,
        cfg: TxConfig,
        pool: P,
    ) -> Result<Self, IgbError> {
        let ring = DescRing::new(space, "TX", cfg.ring_size, cfg.queue)?;
        let n = ring.len();
        let mut t = TxRing {
            dev,
            ring,
            next_clean: 0,
            next_post: 0,
            posted: (0..n).map(|_| None).collect(),
            pool,
            queue: cfg.queue,
            stats: TxStats::default(),
            stopped: false,
        };
        t.program()?;
        Ok(t)
    }

    fn regs(&self) -> QueueRegs {
        QueueRegs {
            base: tx_queue_base(self.queue),
            queue: self.queue,
        }
    }

    fn reg(&self, off: u32) -> u32 {
        self.regs().reg(off)
    }

    fn program(&mut self) -> Result<(), IgbError> {
        self.regs().program(&*self.dev, &self.ring, |_| {})
    }

    /// A buffer to build a frame in (owner fast path of the TX pool).
    pub fn alloc(&mut self) -> Option<Buf> {
        self.pool.alloc()
    }

    /// Returns an unused buffer.
    pub fn free(&mut self, buf: Buf) {
        self.pool.recycle(buf)
    }

    pub fn buf_len(&self) -> usize {
        self.pool.buf_len()
    }

    /// Free descriptor slots (one is always kept empty).
    pub fn free_slots(&self) -> usize {
        self.ring.mask - ((self.next_post.wrapping_sub(self.next_clean)) & self.ring.mask)
    }

    /// Posts whole frames from the front of `bufs` while they fit, then
    /// writes the tail once. Posted buffers are removed from `bufs`; what did
    /// not fit stays there. Returns the number of frames posted.
    pub fn send(&mut self, bufs: &mut Vec<TxBuf>) -> usize {
        if self.stopped {
            return 0;
        }
        let mut frames = 0;
        let mut taken = 0;
        let start = self.next_post;
        // Length of the next frame in buffers.
        while let Some(n) = bufs[taken..].iter().position(|b| b.eop).map(|p| p + 1) {
            if n > self.free_slots() {
                break;
            }
            let frame = &bufs[taken..taken + n];
            let paylen: u32 = frame.iter().map(|b| b.len as u32).sum();
            if frame
                .iter()
                .any(|b| b.len as usize > self.pool.buf_len() || b.len == 0)
            {
                self.stats.invalid += 1;
                // Refused frames go back to the pool.
                for b in bufs.drain(taken..taken + n) {
                    self.pool.recycle(b.buf);
                }
                continue;
            }
            for b in &bufs[taken..taken + n] {
                let i = self.next_post;
                self.ring.slot(i).write_tx(
                    b.buf.iova(),
                    TxCmdTypeLen::data(b.len, b.eop),
                    TxOlinfo::with_paylen(paylen),
                );
                self.next_post = (i + 1) & self.ring.mask;
            }
            taken += n;
            frames += 1;
            self.stats.packets += 1;
            self.stats.bytes += paylen as u64;
            self.stats.descriptors += n as u64;
        }
        // Record ownership of posted buffers in slot order.
        let mut i = start;
        for b in bufs.drain(..taken) {
            self.posted[i] = Some(b.buf);
            i = (i + 1) & self.ring.mask;
        }
        if self.next_post != start {
            fence(Ordering::Release);
            self.dev.write32(self.reg(Q_TAIL), self.next_post as u32);
            self.stats.doorbells += 1;
        }
        frames
    }

    /// Frees completed descriptors in blocks of [`TX_CLEAN_BLOCK`] (or what
    /// is left when fewer are in flight and the last of them is done).
    /// Returns the number of descriptors cleaned.
    pub fn clean(&mut self) -> usize {
        let mut cleaned = 0;
        loop {
            let in_flight = (self.next_post.wrapping_sub(self.next_clean)) & self.ring.mask;
            if in_flight == 0 {
                break;
            }
            let block = in_flight.min(TX_CLEAN_BLOCK);
            let last = (self.next_clean + block - 1) & self.ring.mask;
            if self.ring.slot(last).tx_status_acquire() & TX_STATUS_DD == 0 {
                break;
            }
            for _ in 0..block {
                if let Some(b) = self.posted[self.next_clean].take() {
                    self.pool.recycle(b);
                }
                self.next_clean = (self.next_clean + 1) & self.ring.mask;
            }
            cleaned += block;
        }
        self.stats.cleaned += cleaned as u64;
        cleaned
    }

    pub fn in_flight(&self) -> usize {
        (self.next_post.wrapping_sub(self.next_clean)) & self.ring.mask
    }

    pub fn stats(&self) -> &TxStats {
        &self.stats
    }

    pub fn pool(&mut self) -> &mut P {
        &mut self.pool
    }

    /// Software view of the tail (the last value written to TDT).
    pub fn tail(&self) -> usize {
        self.next_post
    }
    pub fn hw_head(&self) -> u32 {
        self.dev.read32(self.reg(Q_HEAD))
    }

    /// Stops the queue and takes back every posted buffer. Idempotent.
    /// Starts the queue afresh after a device reset: frames posted but not
    /// known to be sent are given up (their buffers go back to the pool,
    /// counted in `restart_dropped`; TCP retransmits), then the queue is
    /// programmed as at creation.
    pub fn restart(&mut self) -> Result<(), IgbError> {
        let in_flight = self.in_flight();
        self.stop()?;
        self.stats.restart_dropped += in_flight as u64;
        self.next_clean = 0;
        self.next_post = 0;
        self.stopped = false;
        self.program()
    }

    pub fn stop(&mut self) -> Result<(), IgbError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let ok = self.regs().disable(&*self.dev);
        for slot in self.posted.iter_mut() {
            if let Some(b) = slot.take() {
                self.pool.recycle(b);
            }
        }
        self.next_clean = self.next_post;
        if ok {
            Ok(())
        } else {
            Err(IgbError::QueueDisableTimeout(self.queue))
        }
    }
}

impl<P: BufPool> Drop for TxRing<P> {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("TX queue {}: {e}", self.queue);
        }
    }
}
