//! A port queue's receive and transmit rings, whatever the backend: the
//! igb descriptor rings (simulator, VFIO) or an AF_XDP socket's halves.
//! Both produce the same [`RxBatch`]es from the same pools, so nothing
//! above this module needs to know which it has; the methods carry the igb
//! rings' names. The choice costs one branch per call (per batch), not
//! per packet.

use crate::{HeaderPool, PagePool};
use driver::recovery::QueueWatch;
use driver::{Health, IgbError, RxBatch, RxRing, RxStats, TxBuf, TxRing, TxStats, WbObserver};
use std::time::Instant;

/// The AF_XDP receive half on the port's pools.
pub type XdpRxRing = xdp::XdpRx<PagePool, HeaderPool>;

/// A queue's receive ring.
pub enum RxQueue {
    Igb(RxRing<PagePool, HeaderPool>),
    Xdp(XdpRxRing),
}

/// A queue's transmit ring.
pub enum TxQueue {
    Igb(TxRing<PagePool>),
    Xdp(xdp::XdpTx),
}

impl RxQueue {
    pub fn queue(&self) -> u32 {
        match self {
            RxQueue::Igb(r) => r.queue(),
            RxQueue::Xdp(r) => r.queue(),
        }
    }

    /// Buffers the device may hold at once: the igb ring's descriptors,
    /// the AF_XDP fill ring's entries.
    pub fn ring_size(&self) -> usize {
        match self {
            RxQueue::Igb(r) => r.ring_size(),
            RxQueue::Xdp(r) => r.ring_size(),
        }
    }

    /// A batch sized for this queue's packets.
    pub fn new_batch(&self, capacity: usize) -> RxBatch {
        match self {
            RxQueue::Igb(r) => r.new_batch(capacity),
            RxQueue::Xdp(r) => r.new_batch(capacity),
        }
    }

    /// Harvests up to `budget` frames into `batch` (see `RxRing::poll`).
    #[inline]
    pub fn poll(&mut self, batch: &mut RxBatch, budget: usize) -> usize {
        match self {
            RxQueue::Igb(r) => r.poll(batch, budget),
            RxQueue::Xdp(r) => r.poll(batch, budget),
        }
    }

    /// Returns the batch's buffers on the owner fast path.
    #[inline]
    pub fn recycle(&mut self, batch: &mut RxBatch) {
        match self {
            RxQueue::Igb(r) => r.recycle(batch),
            RxQueue::Xdp(r) => r.recycle(batch),
        }
    }

    pub fn stats(&self) -> &RxStats {
        match self {
            RxQueue::Igb(r) => r.stats(),
            RxQueue::Xdp(r) => r.stats(),
        }
    }

    /// The payload and header pools.
    pub fn pools(&mut self) -> (&mut PagePool, &mut HeaderPool) {
        match self {
            RxQueue::Igb(r) => r.pools(),
            RxQueue::Xdp(r) => r.pools(),
        }
    }

    /// Sees every RX write-back (igb only; an AF_XDP queue has none and
    /// drops the observer).
    pub fn set_wb_observer(&mut self, obs: Option<WbObserver>) -> Option<WbObserver> {
        match self {
            RxQueue::Igb(r) => r.set_wb_observer(obs),
            RxQueue::Xdp(_) => None,
        }
    }

    /// Whether a device reset took the queue away (igb; never for AF_XDP).
    pub fn device_lost(&self) -> bool {
        match self {
            RxQueue::Igb(r) => r.device_lost(),
            RxQueue::Xdp(_) => false,
        }
    }

    /// Starts the queue afresh after a device reset (igb; nothing to do
    /// for AF_XDP).
    pub fn restart(&mut self) -> Result<(), IgbError> {
        match self {
            RxQueue::Igb(r) => r.restart(),
            RxQueue::Xdp(_) => Ok(()),
        }
    }

    /// Stops the queue and takes back every posted buffer (AF_XDP: parks
    /// them with the socket, which returns them once it is closed).
    pub fn stop(&mut self) -> Result<(), IgbError> {
        match self {
            RxQueue::Igb(r) => r.stop(),
            RxQueue::Xdp(r) => {
                r.stop();
                Ok(())
            }
        }
    }

    /// The AF_XDP ring, if this is one.
    pub fn as_xdp(&mut self) -> Option<&mut XdpRxRing> {
        match self {
            RxQueue::Xdp(r) => Some(r),
            RxQueue::Igb(_) => None,
        }
    }

    /// The health check (see `Queue::check`): igb queues run `watch`;
    /// AF_XDP queues have no device to recover and are always `Ok`.
    pub fn check(
        &mut self,
        watch: Option<&mut QueueWatch>,
        tx: Option<&mut TxQueue>,
        now: Instant,
    ) -> Health {
        match (self, watch) {
            (RxQueue::Igb(r), Some(w)) => {
                let tx = match tx {
                    Some(TxQueue::Igb(t)) => Some(t),
                    _ => None,
                };
                w.check(r, tx, now)
            }
            _ => Health::Ok,
        }
    }
}

impl TxQueue {
    /// A buffer to build a frame in.
    pub fn alloc(&mut self) -> Option<driver::Buf> {
        match self {
            TxQueue::Igb(t) => t.alloc(),
            TxQueue::Xdp(t) => t.alloc(),
        }
    }

    /// Returns an unused buffer.
    pub fn free(&mut self, buf: driver::Buf) {
        match self {
            TxQueue::Igb(t) => t.free(buf),
            TxQueue::Xdp(t) => t.free(buf),
        }
    }

    pub fn buf_len(&self) -> usize {
        match self {
            TxQueue::Igb(t) => t.buf_len(),
            TxQueue::Xdp(t) => t.buf_len(),
        }
    }

    /// Free ring slots.
    pub fn free_slots(&mut self) -> usize {
        match self {
            TxQueue::Igb(t) => t.free_slots(),
            TxQueue::Xdp(t) => t.free_slots(),
        }
    }

    /// Posts whole frames from the front of `bufs` (see `TxRing::send`).
    pub fn send(&mut self, bufs: &mut Vec<TxBuf>) -> usize {
        match self {
            TxQueue::Igb(t) => t.send(bufs),
            TxQueue::Xdp(t) => t.send(bufs),
        }
    }

    /// Reclaims completed buffers.
    pub fn clean(&mut self) -> usize {
        match self {
            TxQueue::Igb(t) => t.clean(),
            TxQueue::Xdp(t) => t.clean(),
        }
    }

    pub fn in_flight(&self) -> usize {
        match self {
            TxQueue::Igb(t) => t.in_flight(),
            TxQueue::Xdp(t) => t.in_flight(),
        }
    }

    pub fn stats(&self) -> &TxStats {
        match self {
            TxQueue::Igb(t) => t.stats(),
            TxQueue::Xdp(t) => t.stats(),
        }
    }

    /// Whether frames of several buffers can be sent (igb: yes; AF_XDP
    /// without multi-buffer: no).
    pub fn multi_buffer(&self) -> bool {
        matches!(self, TxQueue::Igb(_))
    }

    pub fn restart(&mut self) -> Result<(), IgbError> {
        match self {
            TxQueue::Igb(t) => t.restart(),
            TxQueue::Xdp(_) => Ok(()),
        }
    }

    pub fn stop(&mut self) -> Result<(), IgbError> {
        match self {
            TxQueue::Igb(t) => t.stop(),
            TxQueue::Xdp(t) => {
                t.stop();
                Ok(())
            }
        }
    }

    /// TX buffers not back in their pool (igb: its own pool's audit;
    /// AF_XDP: its buffers are pages of the RX pool, audited there).
    pub fn leaked(&mut self) -> usize {
        match self {
            TxQueue::Igb(t) => crate::Pool::audit(t.pool()).lent,
            TxQueue::Xdp(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{HeaderPoolConfig, PagePoolConfig};
    use driver::{BufPool, Csum, DmaSpace, RxBatch};
    use std::sync::Arc;

    /// A ring that is not igb's fills a batch with whole frames (no header
    /// slot, no checksum verdict); a batch dropped elsewhere sends the
    /// pages home.
    #[test]
    fn frames_pushed_into_a_batch_read_back_and_go_home() {
        let space = DmaSpace::new(Arc::new(driver::dma::NoIommu));
        let mut pages = crate::PagePool::new(
            &space,
            PagePoolConfig {
                buffers: 8,
                ..PagePoolConfig::default()
            },
        )
        .unwrap();
        let hdrs = crate::HeaderPool::new(
            &space,
            HeaderPoolConfig {
                buffers: 8,
                ..HeaderPoolConfig::default()
            },
        )
        .unwrap();
        let id = driver::new_ring_id();
        let mut batch = RxBatch::for_ring(4, id, pages.returner(), hdrs.returner());
        assert_eq!(batch.ring_id(), id);
        for n in [60u16, 1514] {
            let mut b = pages.alloc().unwrap();
            b.as_mut_slice(n as usize).fill(n as u8);
            batch.push_frame(b, n);
        }
        assert_eq!(batch.len(), 2);
        let p = batch.get(1).unwrap();
        assert_eq!(p.len(), 1514);
        assert!(p.header().is_empty());
        assert_eq!(p.to_vec(), vec![1514u16 as u8; 1514]);
        assert_eq!(
            (p.meta().ip_csum(), p.meta().l4_csum()),
            (Csum::None, Csum::None)
        );
        assert_eq!(pages.audit().lent, 2);
        drop(batch);
        assert_eq!(
            pages.audit().lent,
            0,
            "the dropped batch sent its pages home"
        );
    }
}
