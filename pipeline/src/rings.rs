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

    /// A payload pool as `cfg` says and a header pool of 8 slots, with no
    /// IOMMU.
    fn pools(cfg: PagePoolConfig) -> (crate::PagePool, crate::HeaderPool) {
        let space = DmaSpace::new(Arc::new(driver::dma::NoIommu));
        let pages = crate::PagePool::new(&space, cfg).unwrap();
        let hdrs = crate::HeaderPool::new(
            &space,
            HeaderPoolConfig {
                buffers: 8,
                ..HeaderPoolConfig::default()
            },
        )
        .unwrap();
        (pages, hdrs)
    }

    /// A ring that is not igb's fills a batch with whole frames (no header
    /// slot, no checksum verdict); a batch dropped elsewhere sends the
    /// pages home.
    #[test]
    fn frames_pushed_into_a_batch_read_back_and_go_home() {
        let (mut pages, hdrs) = pools(PagePoolConfig {
            buffers: 8,
            ..PagePoolConfig::default()
        });
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

    /// AF_XDP multi-buffer: a run of descriptors assembled by
    /// `xdp::Chain` becomes one frame of several segments in the batch, as
    /// an igb jumbo frame does (read back whole, drained as one packet
    /// with its segments in order); a faulty run and a run cut off by a
    /// stop send every page home and deliver nothing.
    #[test]
    fn chained_descriptors_make_one_multi_segment_frame() {
        let (mut pages, hdrs) = pools(PagePoolConfig {
            buffers: 16,
            buf_len: 3072,
            headroom: 1024,
            ..PagePoolConfig::default()
        });
        let mut batch =
            RxBatch::for_ring(4, driver::new_ring_id(), pages.returner(), hdrs.returner());
        let frame: Vec<u8> = (0..9014u32).map(|i| (i % 251) as u8).collect();
        let mut chain = xdp::Chain::new(4);
        let mut spilled = Vec::new();
        let pieces: Vec<&[u8]> = frame.chunks(3072).collect();
        assert_eq!(pieces.len(), 3);
        for (i, piece) in pieces.iter().enumerate() {
            let mut b = pages.alloc().unwrap();
            b.as_mut_slice(piece.len()).copy_from_slice(piece);
            let contd = i + 1 < pieces.len();
            let step = chain.push(Some((b, piece.len() as u16)), None, contd, &mut |b| {
                spilled.push(b)
            });
            if contd {
                assert_eq!(step, xdp::Step::More);
            } else {
                assert_eq!(step, xdp::Step::Frame);
                assert_eq!(batch.push_frame_segs(chain.drain()), 9014);
            }
        }
        // A run with a bad descriptor, then one cut off: nothing delivered.
        for fault in [None, Some(driver::DropReason::PktLenOverflow), None] {
            let b = pages.alloc().unwrap();
            chain.push(Some((b, 3072)), fault, true, &mut |b| spilled.push(b));
        }
        let b = pages.alloc().unwrap();
        let step = chain.push(Some((b, 100)), None, false, &mut |b| spilled.push(b));
        assert_eq!(step, xdp::Step::Dropped(driver::DropReason::PktLenOverflow));
        for _ in 0..2 {
            let b = pages.alloc().unwrap();
            chain.push(Some((b, 3072)), None, true, &mut |b| spilled.push(b));
        }
        assert!(chain.abort(&mut |b| spilled.push(b)));
        assert_eq!(
            spilled.len(),
            6,
            "every page of the dropped runs handed back"
        );
        for b in spilled.drain(..) {
            pages.recycle(b);
        }
        assert_eq!(batch.len(), 1);
        let p = batch.get(0).unwrap();
        assert_eq!(p.len(), 9014);
        assert!(p.header().is_empty());
        assert_eq!(
            p.segments().map(|s| s.len()).collect::<Vec<_>>(),
            [3072, 3072, 2870]
        );
        assert_eq!(p.to_vec(), frame);
        assert_eq!(pages.audit().lent, 3);
        let mut seen = 0;
        batch.drain_packets(|pkt| {
            assert_eq!(
                (pkt.len, pkt.segs.len(), pkt.hdr.is_none()),
                (9014, 3, true)
            );
            seen += 1;
        });
        assert_eq!(seen, 1);
        assert_eq!(
            pages.audit().lent,
            0,
            "the drained packet's pages went home"
        );
    }
}
