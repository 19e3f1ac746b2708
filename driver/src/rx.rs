//! The RX descriptor ring: poll write-backs in batches, hand packets out
//! without copying (header slot + payload pages), refill, one tail write per
//! poll.
//!
//! Ownership of a descriptor slot moves between driver and device:
//!
//! ```text
//!   next_clean            next_fill (= RDT)
//!        |  posted: device owns   |  empty: driver owns  |
//! ```
//!
//! Slots `[next_clean, next_fill)` hold posted buffers; the device fills
//! them from RDH on and sets DD. The driver keeps one slot empty, so the tail
//! can never catch up with (overtake) the head: RDT == RDH always means "no
//! descriptor for the device", never "all of them".
//!
//! A frame may span several descriptors (jumbo frames; one payload buffer
//! each) and even several polls; it is assembled in `cur` and handed out
//! whole at EOP. Write-backs are validated before anything is handed out:
//! impossible ones are dropped, counted by [`DropReason`], and their buffers
//! recycled.
//!
//! Buffers make the shortest trip the owner thread allows, and in runs,
//! not one by one: the buffers posted in descriptors wait in ring order in
//! two [`BufQueue`]s (payload pages, header slots); a poll writes the
//! record of each clean one-descriptor frame (the fast path) and then moves
//! the run's buffers from the front of the queues to the batch in one copy
//! per queue. Refill takes buffers in bulk ([`BufPool::alloc_bulk`]) and
//! writes each descriptor once, and [`RxRing::recycle`] keeps a batch's
//! buffers as the ring's spares for the next refill (page reuse, as Linux
//! igb does), handing the pools only what exceeds a ring's worth. A batch
//! that goes anywhere else returns its buffers to the pools.

use crate::buf::{Buf, BufPool, BufQueue, BufReturn};
use crate::desc::{DescSlot, RxWbInfo, RxWbStatus, RxWriteBack};
use crate::device::Device;
use crate::dma::DmaSpace;
use crate::igb::{DescRing, IgbError, QueueRegs};
use crate::regs::*;
use crate::SplitMode;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

/// Configuration of one RX queue.
#[derive(Clone, Debug)]
pub struct RxConfig {
    pub queue: u32,
    /// Descriptors in the ring: a power of two, 8..=4096.
    pub ring_size: usize,
    pub split: SplitMode,
    /// Largest number of descriptors one frame may use before the driver
    /// gives up on it (`no_eop`). Defaults to 64 (64 KiB at 1 KiB buffers).
    pub max_descs_per_packet: usize,
}

impl Default for RxConfig {
    fn default() -> Self {
        RxConfig {
            queue: 0,
            ring_size: 512,
            split: SplitMode::On,
            max_descs_per_packet: 64,
        }
    }
}

/// Why the driver dropped a frame. Counted per reason; the frame's buffers
/// always go back to their pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// RXE or another frame error bit (CRC, symbol, sequence, carrier).
    RxError,
    /// The device checked the IPv4 header checksum and found it wrong.
    IpChecksum,
    /// The device checked the TCP/UDP checksum and found it wrong.
    L4Checksum,
    /// PKT_LEN larger than the payload buffer posted with the descriptor.
    PktLenOverflow,
    /// HDR_LEN larger than the header buffer while claiming a split header.
    HdrLenOverflow,
    /// No EOP within `max_descs_per_packet` descriptors.
    NoEop,
    /// A frame of zero bytes.
    ZeroLength,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::RxError,
        DropReason::IpChecksum,
        DropReason::L4Checksum,
        DropReason::PktLenOverflow,
        DropReason::HdrLenOverflow,
        DropReason::NoEop,
        DropReason::ZeroLength,
    ];

    /// Stable name used in stats output.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::RxError => "rx_error",
            DropReason::IpChecksum => "ip_checksum",
            DropReason::L4Checksum => "l4_checksum",
            DropReason::PktLenOverflow => "pkt_len_overflow",
            DropReason::HdrLenOverflow => "hdr_len_overflow",
            DropReason::NoEop => "no_eop",
            DropReason::ZeroLength => "zero_length",
        }
    }
}

/// Ring counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxStats {
    /// Frames handed out.
    pub packets: u64,
    /// Bytes handed out (header + payload).
    pub bytes: u64,
    /// Descriptors completed by the device.
    pub descriptors: u64,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [u64; 7],
    /// Write-backs with HBO (header did not fit the header buffer; the frame
    /// is delivered unsplit as the datasheet specifies).
    pub hbo: u64,
    /// Header buffers posted but left unused by the device (non-first
    /// descriptors of a frame, unsplit frames), recycled by the driver.
    pub dummy_headers: u64,
    /// Refills cut short because a pool was empty.
    pub refill_short: u64,
    /// Tail (doorbell) writes.
    pub doorbells: u64,
    /// Times the queue was started afresh after a device reset.
    pub restarts: u64,
    /// Descriptors posted when those resets came: their buffers went back
    /// to the pools, any frame the device had put in them is lost.
    pub restart_reclaimed: u64,
}

impl RxStats {
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
    /// Frames the ring finished with: handed out or dropped. Unchanged over
    /// a poll means the ring had nothing completed.
    pub fn frames_handled(&self) -> u64 {
        self.packets + self.drops_total()
    }
}

/// Adds another ring's counters (totals over several queues).
impl std::ops::AddAssign for RxStats {
    fn add_assign(&mut self, o: RxStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.descriptors += o.descriptors;
        for (d, n) in self.drops.iter_mut().zip(o.drops) {
            *d += n;
        }
        self.hbo += o.hbo;
        self.dummy_headers += o.dummy_headers;
        self.refill_short += o.refill_short;
        self.doorbells += o.doorbells;
        self.restarts += o.restarts;
        self.restart_reclaimed += o.restart_reclaimed;
    }
}

/// One payload segment: `len` bytes at the start of `buf`.
#[derive(Debug)]
pub struct Seg {
    pub buf: Buf,
    pub len: u16,
}

/// Checksum verdict from the device for a delivered frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// The device did not check (non-IP, offload off).
    None,
    /// The device checked and it was right.
    Good,
}

/// Metadata of one received frame in an [`RxBatch`]. The write-back
/// facts are kept as the device wrote them (three dwords of the EOP
/// write-back) and decoded only when asked for: most consumers never ask.
#[derive(Debug)]
pub struct RxPacket {
    /// Index of the packet's header slot in the batch's `hdrs`, or
    /// [`NO_HDR`].
    hdr: u32,
    len: u32,
    seg_start: u32,
    seg_count: u16,
    hdr_len: u16,
    /// Where the segment lengths of a frame of several segments start in
    /// the batch's `seg_lens` (a single segment holds `len - hdr_len`).
    lens_start: u32,
    info: RxWbInfo,
    rss: u32,
    status: RxWbStatus,
}

impl RxPacket {
    /// The record of a frame accepted from its EOP write-back `wb`.
    #[inline(always)]
    fn new(
        hdr: u32,
        hdr_len: u16,
        (seg_start, seg_count, lens_start): (u32, u16, u32),
        len: u32,
        wb: &RxWriteBack,
    ) -> Self {
        RxPacket {
            hdr,
            len,
            seg_start,
            seg_count,
            hdr_len,
            lens_start,
            info: wb.info,
            rss: wb.rss,
            status: wb.status,
        }
    }

    /// Packet type bits from the write-back (`desc::PKT_TYPE_*`).
    #[inline]
    pub fn pkt_type(&self) -> u16 {
        self.info.pkt_type() as u16
    }
    /// The device's verdict on the IPv4 header checksum.
    #[inline]
    pub fn ip_csum(&self) -> Csum {
        if self.status.ipcs() {
            Csum::Good
        } else {
            Csum::None
        }
    }
    /// The device's verdict on the TCP/UDP checksum.
    #[inline]
    pub fn l4_csum(&self) -> Csum {
        if self.status.l4cs() {
            Csum::Good
        } else {
            Csum::None
        }
    }
    /// Dword 1 of the write-back (RSS hash or IP id).
    #[inline]
    pub fn rss(&self) -> u32 {
        self.rss
    }
    /// RSS type of the write-back (`desc::RSS_TYPE_*`): which hash
    /// [`Self::rss`] holds, 0 when none.
    #[inline]
    pub fn rss_type(&self) -> u8 {
        self.info.rss_type() as u8
    }
}

/// One received frame moved out of an [`RxBatch`] by
/// [`RxBatch::drain_packets`]: its buffers, now owned by the consumer, and
/// the write-back facts about it.
#[derive(Debug)]
pub struct OwnedPacket {
    /// The header slot holding the first `hdr_len` bytes, when the device
    /// split the frame.
    pub hdr: Option<Buf>,
    pub hdr_len: u16,
    /// Frame length in bytes (header + payload).
    pub len: u32,
    /// Payload segments in order, each at the start of its buffer.
    pub segs: Vec<Seg>,
    /// Packet type bits from the write-back (`desc::PKT_TYPE_*`).
    pub pkt_type: u16,
    pub ip_csum: Csum,
    pub l4_csum: Csum,
    /// Dword 1 of the write-back (RSS hash or IP id).
    pub rss: u32,
    /// RSS hash type (`desc::RSS_TYPE_*`), 0 when RSS is off.
    pub rss_type: u8,
}

static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh ring identity for a batch's owner (see [`RxBatch::for_ring`]).
pub fn new_ring_id() -> u64 {
    NEXT_RING_ID.fetch_add(1, Ordering::Relaxed)
}

/// [`RxPacket`]'s header slot index when the frame has none.
const NO_HDR: u32 = u32::MAX;

/// A batch of received frames. Reused across polls: [`RxRing::poll`]
/// appends, [`RxRing::recycle`] returns every buffer and empties it.
///
/// The payload buffers are kept in arrival order as bare handles, apart
/// from the records and from their lengths, so the ring moves a run of
/// them in and out in bulk: a one-segment frame's segment holds
/// `len - hdr_len` bytes, and only frames of several segments list their
/// segment lengths (in `seg_lens`).
///
/// Dropping a non-empty batch (any thread) returns its buffers through the
/// pools' foreign return path, so no page is ever lost.
pub struct RxBatch {
    pkts: Vec<RxPacket>,
    segs: Vec<Buf>,
    /// Segment lengths of the frames of more than one segment.
    seg_lens: Vec<u16>,
    /// Header slots of the packets that have one, in packet order: kept
    /// apart from the records so the ring takes them all back at once.
    hdrs: Vec<Buf>,
    ring_id: u64,
    returners: Option<(Arc<dyn BufReturn>, Arc<dyn BufReturn>)>,
}

impl RxBatch {
    pub fn len(&self) -> usize {
        self.pkts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }
    pub fn get(&self, i: usize) -> Option<PacketRef<'_>> {
        self.pkts.get(i).map(|p| self.view(p))
    }
    pub fn iter(&self) -> impl ExactSizeIterator<Item = PacketRef<'_>> + '_ {
        self.pkts.iter().map(|p| self.view(p))
    }

    fn view<'a>(&'a self, pkt: &'a RxPacket) -> PacketRef<'a> {
        PacketRef {
            pkt,
            segs: &self.segs,
            seg_lens: &self.seg_lens,
            hdrs: &self.hdrs,
        }
    }

    /// Empties the batch's lists (their buffers already moved out).
    fn clear(&mut self) {
        self.pkts.clear();
        self.seg_lens.clear();
    }

    /// Moves every buffer out, header slots to `hdr` and payload buffers to
    /// `page`, and empties the batch: the application-thread return path
    /// (e.g. into a batching returner).
    pub fn drain_bufs(&mut self, hdr: impl FnMut(Buf), page: impl FnMut(Buf)) {
        self.clear();
        self.hdrs.drain(..).for_each(hdr);
        self.segs.drain(..).for_each(page);
    }

    /// Moves every packet out, one call of `f` per packet in arrival order,
    /// and empties the batch: the path for consumers that keep buffers past
    /// the batch (a stack presenting each payload page on its own).
    ///
    /// `f` takes what it wants out of [`OwnedPacket::hdr`] and
    /// [`OwnedPacket::segs`]; whatever it leaves there goes back to the pools
    /// through the foreign return path, so nothing is lost.
    pub fn drain_packets(&mut self, mut f: impl FnMut(&mut OwnedPacket)) {
        let mut leftover_hdrs = Vec::new();
        let mut leftover_pages = Vec::new();
        let mut segs = self.segs.drain(..);
        let mut hdrs = self.hdrs.drain(..);
        let mut scratch = OwnedPacket {
            hdr: None,
            hdr_len: 0,
            len: 0,
            pkt_type: 0,
            ip_csum: Csum::None,
            l4_csum: Csum::None,
            rss: 0,
            rss_type: 0,
            segs: Vec::new(),
        };
        for p in self.pkts.drain(..) {
            // Packets with a header slot hold them in order.
            scratch.hdr = if p.hdr == NO_HDR { None } else { hdrs.next() };
            scratch.hdr_len = p.hdr_len;
            scratch.len = p.len;
            scratch.pkt_type = p.pkt_type();
            scratch.ip_csum = p.ip_csum();
            scratch.l4_csum = p.l4_csum();
            scratch.rss = p.rss();
            scratch.rss_type = p.rss_type();
            for (k, buf) in segs.by_ref().take(p.seg_count as usize).enumerate() {
                let len = seg_len(&p, &self.seg_lens, k);
                scratch.segs.push(Seg { buf, len });
            }
            f(&mut scratch);
            leftover_hdrs.extend(scratch.hdr.take());
            leftover_pages.extend(scratch.segs.drain(..).map(|s| s.buf));
        }
        drop(segs);
        drop(hdrs);
        self.seg_lens.clear();
        if let Some((pages, hdrs)) = &self.returners {
            hdrs.give_back(&mut leftover_hdrs);
            pages.give_back(&mut leftover_pages);
        }
    }

    /// An empty batch for a receive ring that is not an igb descriptor
    /// ring (AF_XDP): `ring_id` from [`new_ring_id`], the pools' foreign
    /// return paths for a batch dropped elsewhere. The ring fills it with
    /// [`RxBatch::push_frame`] and takes it back with
    /// [`RxBatch::drain_bufs`] after checking [`RxBatch::ring_id`].
    pub fn for_ring(
        capacity: usize,
        ring_id: u64,
        pages: Arc<dyn BufReturn>,
        hdrs: Arc<dyn BufReturn>,
    ) -> RxBatch {
        RxBatch {
            pkts: Vec::with_capacity(capacity),
            segs: Vec::with_capacity(capacity),
            seg_lens: Vec::new(),
            hdrs: Vec::new(),
            ring_id,
            returners: Some((pages, hdrs)),
        }
    }

    /// The ring this batch belongs to.
    pub fn ring_id(&self) -> u64 {
        self.ring_id
    }

    /// Appends a whole frame of `len` bytes at the start of `buf` (no
    /// header slot, no write-back facts: checksum verdicts [`Csum::None`],
    /// so the stack verifies in software). For rings that are not igb
    /// descriptor rings; `len` is clipped to the buffer's capacity.
    pub fn push_frame(&mut self, buf: Buf, len: u16) {
        let len = len.min(buf.capacity() as u16);
        let seg_start = self.segs.len() as u32;
        self.segs.push(buf);
        self.pkts.push(RxPacket {
            hdr: NO_HDR,
            len: len as u32,
            seg_start,
            seg_count: 1,
            hdr_len: 0,
            lens_start: 0,
            info: RxWbInfo(0),
            rss: 0,
            status: RxWbStatus(0),
        });
    }

    /// Appends one frame held in several buffers, in order, each segment
    /// `len` bytes at the start of its buffer (clipped to its capacity):
    /// the shape of an igb jumbo frame over several descriptors without
    /// header split. No header slot, checksum verdicts [`Csum::None`]. For
    /// rings that are not igb descriptor rings (AF_XDP multi-buffer).
    /// Returns the frame's length.
    pub fn push_frame_segs(&mut self, segs: impl IntoIterator<Item = (Buf, u16)>) -> u32 {
        let seg_start = self.segs.len() as u32;
        let lens_start = self.seg_lens.len() as u32;
        let mut len = 0u32;
        for (buf, n) in segs {
            let n = n.min(buf.capacity() as u16);
            len += n as u32;
            self.segs.push(buf);
            self.seg_lens.push(n);
        }
        let seg_count = (self.segs.len() as u32 - seg_start) as u16;
        if seg_count <= 1 {
            // One segment: its length is the frame's.
            self.seg_lens.truncate(lens_start as usize);
        }
        if seg_count == 0 {
            return 0;
        }
        self.pkts.push(RxPacket {
            hdr: NO_HDR,
            len,
            seg_start,
            seg_count,
            hdr_len: 0,
            lens_start,
            info: RxWbInfo(0),
            rss: 0,
            status: RxWbStatus(0),
        });
        len
    }

    /// Returns every buffer through the foreign path (any thread).
    pub fn give_back(&mut self) {
        let Some((pages, hdrs)) = &self.returners else {
            return;
        };
        self.pkts.clear();
        self.seg_lens.clear();
        hdrs.give_back(&mut self.hdrs);
        pages.give_back(&mut self.segs);
    }
}

impl Drop for RxBatch {
    fn drop(&mut self) {
        if !(self.pkts.is_empty() && self.segs.is_empty() && self.hdrs.is_empty()) {
            self.give_back();
        }
    }
}

/// Length of segment `k` of packet `p`: the frame's payload when it has
/// one segment, else from the batch's list of segment lengths.
#[inline]
fn seg_len(p: &RxPacket, seg_lens: &[u16], k: usize) -> u16 {
    if p.seg_count == 1 {
        (p.len - p.hdr_len as u32) as u16
    } else {
        seg_lens
            .get(p.lens_start as usize + k)
            .copied()
            .unwrap_or(0)
    }
}

/// A borrowed view of one frame: header bytes (from the header buffer, when
/// the device split it) followed by payload segments (from payload pages).
#[derive(Clone, Copy)]
pub struct PacketRef<'a> {
    pkt: &'a RxPacket,
    segs: &'a [Buf],
    seg_lens: &'a [u16],
    hdrs: &'a [Buf],
}

impl<'a> PacketRef<'a> {
    /// Frame length in bytes (header + payload).
    pub fn len(&self) -> usize {
        self.pkt.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.pkt.len == 0
    }
    pub fn meta(&self) -> &'a RxPacket {
        self.pkt
    }
    /// Bytes in the header buffer (empty when not split).
    pub fn header(&self) -> &'a [u8] {
        // The device finished writing the buffer before it set DD (read
        // with acquire); hdr_len was checked against the buffer size when
        // the frame was accepted.
        match self.hdrs.get(self.pkt.hdr as usize) {
            Some(b) => b.as_slice(self.pkt.hdr_len as usize),
            None => &[],
        }
    }
    /// Payload segments in order; each lies at the start of a payload buffer.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let (pkt, lens) = (self.pkt, self.seg_lens);
        self.segment_bufs()
            .iter()
            .enumerate()
            .map(move |(k, b)| b.as_slice(seg_len(pkt, lens, k) as usize))
    }
    /// The payload buffers themselves (index, IOVA), for zero-copy
    /// consumers; their lengths are those of [`Self::segments`].
    pub fn segment_bufs(&self) -> &'a [Buf] {
        let s = self.pkt.seg_start as usize;
        self.segs
            .get(s..s + self.pkt.seg_count as usize)
            .unwrap_or(&[])
    }
    /// Copies the whole frame out (tests and slow paths only).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(self.header());
        for s in self.segments() {
            v.extend_from_slice(s);
        }
        v
    }
}

/// A frame being assembled across descriptors.
struct Partial {
    descs: usize,
    hdr: Option<Buf>,
    hdr_len: u16,
    /// The frame's payload buffers so far and their lengths.
    segs: Vec<Buf>,
    seg_lens: Vec<u16>,
    bad: Option<DropReason>,
    /// Dropping the rest of a runaway frame until its EOP.
    discarding: bool,
}

/// One RX queue.
pub struct RxRing<P: BufPool, H: BufPool> {
    dev: Arc<dyn Device>,
    ring: DescRing,
    next_clean: usize,
    next_fill: usize,
    /// Payload buffers and header slots posted in descriptors
    /// `[next_clean, next_fill)`, in ring order (the front is
    /// `next_clean`'s); no header slots with split `off`. Queues, so a
    /// poll moves a run of them to its batch in bulk and refill appends.
    posted_pages: BufQueue,
    posted_hdrs: BufQueue,
    /// Buffers of this ring's own recycled batches, posted again by the
    /// next refill before the pools are asked (page reuse, as Linux igb's
    /// `igb_reuse_rx_page`): at most a ring's worth each.
    spare_pages: Vec<Buf>,
    spare_hdrs: Vec<Buf>,
    pages: P,
    hdrs: H,
    split: SplitMode,
    /// Write-back dword 0 bits of which one must be set for HDR_LEN to
    /// count as header bytes on the fast path: none (`off`), SPH (`on`),
    /// any (`always`; a dword of zero has HDR_LEN 0 anyway).
    split_sel: u32,
    hdr_buf: usize,
    pkt_buf: usize,
    /// Header bytes the fast path takes, as (least, how many values):
    /// 1..=hdr_buf when the ring splits, only 0 when not.
    fast_hdr: (u32, u32),
    max_descs: usize,
    queue: u32,
    ring_id: u64,
    cur: Partial,
    stats: RxStats,
    stopped: bool,
    wb_observer: Option<WbObserver>,
}

/// Sees every completed RX write-back the driver reads, with its
/// descriptor index, before the driver acts on it (see
/// [`RxRing::set_wb_observer`]).
pub type WbObserver = Box<dyn FnMut(u32, &RxWriteBack) + Send>;

impl<P: BufPool, H: BufPool> RxRing<P, H> {
    /// Allocates the descriptor ring, programs the queue registers, fills
    /// every slot but one with buffers and enables the queue. Receive as a
    /// whole is turned on by `Igb::enable_rx` afterwards.
    pub fn new(
        dev: Arc<dyn Device>,
        space: &Arc<DmaSpace>,
        cfg: RxConfig,
        pages: P,
        hdrs: H,
    ) -> Result<Self, IgbError> {
        let ring = DescRing::new(space, "RX", cfg.ring_size, cfg.queue)?;
        let n = ring.len();
        let pkt_buf = pages.buf_len();
        if pkt_buf == 0 || !pkt_buf.is_multiple_of(1024) || pkt_buf > 127 * 1024 {
            return Err(IgbError::Config(format!(
                "payload buffer {pkt_buf} B must be a non-zero multiple of 1 KiB"
            )));
        }
        let hdr_buf = if cfg.split == SplitMode::Off {
            0
        } else {
            hdrs.buf_len()
        };
        let hdr_ok = (64..=960).contains(&hdr_buf) && hdr_buf.is_multiple_of(64);
        if cfg.split != SplitMode::Off && !hdr_ok {
            return Err(IgbError::Config(format!(
                "header buffer {hdr_buf} B must be 64..=960 in 64 B steps (SRRCTL.BSIZEHEADER is 4 bits of 64 B)"
            )));
        }
        let max_descs = cfg.max_descs_per_packet.clamp(1, n - 1);
        let mut r = RxRing {
            dev,
            ring,
            next_clean: 0,
            next_fill: 0,
            posted_pages: BufQueue::with_capacity(n),
            posted_hdrs: BufQueue::with_capacity(n),
            spare_pages: Vec::with_capacity(n),
            spare_hdrs: Vec::with_capacity(n),
            pages,
            hdrs,
            split: cfg.split,
            split_sel: match cfg.split {
                SplitMode::Off => 0,
                SplitMode::On => 1 << 31,
                SplitMode::Always => u32::MAX,
            },
            hdr_buf,
            pkt_buf,
            fast_hdr: if cfg.split == SplitMode::Off {
                (0, 1)
            } else {
                (1, hdr_buf as u32)
            },
            max_descs,
            queue: cfg.queue,
            ring_id: new_ring_id(),
            cur: Partial {
                descs: 0,
                hdr: None,
                hdr_len: 0,
                segs: Vec::with_capacity(max_descs),
                seg_lens: Vec::with_capacity(max_descs),
                bad: None,
                discarding: false,
            },
            stats: RxStats::default(),
            stopped: false,
            wb_observer: None,
        };
        r.program()?;
        Ok(r)
    }

    fn regs(&self) -> QueueRegs {
        QueueRegs {
            base: rx_queue_base(self.queue),
            queue: self.queue,
        }
    }

    fn reg(&self, off: u32) -> u32 {
        self.regs().reg(off)
    }

    fn program(&mut self) -> Result<(), IgbError> {
        let (q, split, hdr, pkt) = (self.queue, self.split, self.hdr_buf, self.pkt_buf);
        self.regs().program(&*self.dev, &self.ring, |d| {
            d.write32(rx_queue_base(q) + Q_SRRCTL, srrctl(split, hdr, pkt));
            d.write32(psrtype(q), PSRTYPE_L2_L3_L4);
        })?;
        self.refill();
        Ok(())
    }

    /// An empty batch tied to this ring's pools.
    pub fn new_batch(&self, capacity: usize) -> RxBatch {
        RxBatch {
            pkts: Vec::with_capacity(capacity),
            segs: Vec::with_capacity(capacity * 2),
            seg_lens: Vec::new(),
            hdrs: Vec::with_capacity(capacity),
            ring_id: self.ring_id,
            returners: Some((self.pages.returner(), self.hdrs.returner())),
        }
    }

    /// Harvests up to `budget` completed frames into `batch`, then refills
    /// and rings the doorbell once. Returns the number of frames delivered
    /// (dropped frames count against the budget but are not returned).
    pub fn poll(&mut self, batch: &mut RxBatch, budget: usize) -> usize {
        // Frames finished and delivered, descriptors taken by the slow
        // path; the fast path's frames are `fast`, their bytes `fast_bytes`.
        let (mut completed, mut delivered, mut slow_descs) = (0, 0, 0);
        let (mut fast, mut fast_bytes) = (0, 0);
        let with_hdr = self.split != SplitMode::Off;
        let (mask, fill) = (self.ring.mask, self.next_fill);
        let mut clean = self.next_clean;
        // No frame being assembled or discarded: the fast path may run.
        let mut idle = self.cur.descs == 0 && !self.cur.discarding;
        loop {
            if idle {
                let (next, n, bytes) = self.fast_run(batch, clean, budget - completed);
                self.take_run(batch, n);
                clean = next;
                fast += n;
                completed += n;
                fast_bytes += bytes;
            }
            // The slow path: one descriptor the fast path did not take.
            if completed >= budget || clean == fill {
                break;
            }
            let slot = self.ring.slot(clean);
            let status = slot.status_acquire();
            if status & 1 == 0 {
                break;
            }
            let wb = slot.read_rx_wb(status);
            if self.wb_observer.is_some() {
                self.observe(clean, wb);
            }
            let Some(page) = self.posted_pages.pop_front() else {
                // Unreachable by construction: every slot in
                // [next_clean, next_fill) is posted.
                break;
            };
            let hdr = if with_hdr {
                self.posted_hdrs.pop_front()
            } else {
                None
            };
            clean = (clean + 1) & mask;
            slow_descs += 1;
            let outcome = self.consume(wb, page, hdr, batch);
            idle = self.cur.descs == 0 && !self.cur.discarding;
            match outcome {
                Outcome::More => {}
                Outcome::Dropped => completed += 1,
                Outcome::Delivered => {
                    completed += 1;
                    delivered += 1;
                }
            }
        }
        self.next_clean = clean;
        self.stats.descriptors += (fast + slow_descs) as u64;
        self.stats.packets += fast as u64;
        self.stats.bytes += fast_bytes;
        self.refill();
        delivered + fast
    }

    /// The fast path: from descriptor `clean` on, up to `max` completed
    /// descriptors that each hold a whole, clean frame (see
    /// [`fast_lens`]), stopping at the first that does not. Writes
    /// their records into `batch`; their buffers stay at the front of the
    /// posted queues for [`Self::take_run`]. Returns the next descriptor to
    /// clean, the frames and their bytes. The ring's parameters are copied
    /// into locals first: each descriptor's acquire load would otherwise
    /// make the compiler read them again.
    #[inline(always)]
    fn fast_run(
        &mut self,
        batch: &mut RxBatch,
        mut clean: usize,
        max: usize,
    ) -> (usize, usize, u64) {
        let (mask, fill) = (self.ring.mask, self.next_fill);
        let (split_sel, pkt_buf, (hdr_min, hdr_span)) =
            (self.split_sel, self.pkt_buf as u32, self.fast_hdr);
        let observing = self.wb_observer.is_some();
        // Each frame's buffers will be the next of the batch's lists; a
        // ring that does not split gives no header slots.
        let mut seg = batch.segs.len() as u32;
        let (mut hdr, hdr_step) = if self.split != SplitMode::Off {
            (batch.hdrs.len() as u32, 1)
        } else {
            (NO_HDR, 0)
        };
        let (mut n, mut bytes) = (0, 0);
        while n < max && clean != fill {
            let slot = self.ring.slot(clean);
            let status = slot.status_acquire();
            if status & 1 == 0 {
                break;
            }
            let wb = slot.read_rx_wb(status);
            let Some((hdr_len, pkt_len)) = fast_lens(&wb, split_sel, pkt_buf, (hdr_min, hdr_span))
            else {
                break;
            };
            if observing {
                self.observe(clean, wb);
            }
            let len = hdr_len + pkt_len;
            batch
                .pkts
                .push(RxPacket::new(hdr, hdr_len as u16, (seg, 1, 0), len, &wb));
            seg += 1;
            hdr += hdr_step;
            clean = (clean + 1) & mask;
            n += 1;
            bytes += len as u64;
        }
        (clean, n, bytes)
    }

    /// Moves the buffers of a run of `run` fast-path frames from the front
    /// of the posted queues to the batch, in bulk.
    #[inline(always)]
    fn take_run(&mut self, batch: &mut RxBatch, run: usize) {
        if run == 0 {
            return;
        }
        self.posted_pages.move_front_to(run, &mut batch.segs);
        if self.split != SplitMode::Off {
            self.posted_hdrs.move_front_to(run, &mut batch.hdrs);
        }
    }

    /// Shows write-back `wb` of descriptor `i` to the observer. Out of line:
    /// without an observer the write-back stays in registers.
    #[cold]
    #[inline(never)]
    fn observe(&mut self, i: usize, wb: RxWriteBack) {
        if let Some(obs) = self.wb_observer.as_mut() {
            obs(i as u32, &wb);
        }
    }

    /// Takes one completed descriptor into the frame being assembled.
    #[inline(always)]
    fn consume(
        &mut self,
        wb: RxWriteBack,
        page: Buf,
        hdr: Option<Buf>,
        batch: &mut RxBatch,
    ) -> Outcome {
        let st = wb.status;
        let first = self.cur.descs == 0 && !self.cur.discarding;
        if self.cur.discarding {
            self.pages.recycle(page);
            if let Some(h) = hdr {
                self.hdrs.recycle(h);
            }
            if st.eop() {
                self.cur.discarding = false;
            }
            return Outcome::More;
        }
        // Header buffer: only the first descriptor of a frame can use it.
        match hdr {
            Some(h) if first => {
                let hdr_bytes = match self.split {
                    SplitMode::Off => 0,
                    SplitMode::On if st.hbo() || !wb.info.sph() => 0,
                    SplitMode::On => wb.info.hdr_len() as usize,
                    SplitMode::Always if st.hbo() => self.hdr_buf,
                    SplitMode::Always => wb.info.hdr_len() as usize,
                };
                if st.hbo() {
                    self.stats.hbo += 1;
                }
                if hdr_bytes > self.hdr_buf {
                    self.mark(DropReason::HdrLenOverflow);
                }
                if hdr_bytes > 0 && hdr_bytes <= self.hdr_buf {
                    self.cur.hdr = Some(h);
                    self.cur.hdr_len = hdr_bytes as u16;
                } else {
                    self.stats.dummy_headers += 1;
                    self.hdrs.recycle(h);
                }
            }
            Some(h) => {
                self.stats.dummy_headers += 1;
                self.hdrs.recycle(h);
            }
            None => {}
        }
        let pkt_len = wb.len.pkt_len() as usize;
        if pkt_len > self.pkt_buf {
            self.mark(DropReason::PktLenOverflow);
            self.pages.recycle(page);
        } else if pkt_len == 0 {
            self.pages.recycle(page);
        } else {
            self.cur.segs.push(page);
            self.cur.seg_lens.push(pkt_len as u16);
        }
        if st.rxe() || st.frame_err() != 0 {
            self.mark(DropReason::RxError);
        }
        self.cur.descs += 1;
        if !st.eop() {
            if self.cur.descs >= self.max_descs {
                self.mark(DropReason::NoEop);
                self.drop_current();
                self.cur.discarding = true;
                return Outcome::Dropped;
            }
            return Outcome::More;
        }
        if st.ipcs() && st.ipe() {
            self.mark(DropReason::IpChecksum);
        }
        if st.l4cs() && st.tcpe() {
            self.mark(DropReason::L4Checksum);
        }
        let len = self.cur.hdr_len as usize
            + self.cur.seg_lens.iter().map(|&n| n as usize).sum::<usize>();
        if len == 0 {
            self.mark(DropReason::ZeroLength);
        }
        if self.cur.bad.is_some() {
            self.drop_current();
            return Outcome::Dropped;
        }
        let seg_start = batch.segs.len() as u32;
        let seg_count = self.cur.segs.len() as u16;
        let lens_start = batch.seg_lens.len() as u32;
        batch.segs.append(&mut self.cur.segs);
        if seg_count > 1 {
            batch.seg_lens.extend_from_slice(&self.cur.seg_lens);
        }
        self.cur.seg_lens.clear();
        let hdr = match self.cur.hdr.take() {
            Some(h) => {
                batch.hdrs.push(h);
                batch.hdrs.len() as u32 - 1
            }
            None => NO_HDR,
        };
        batch.pkts.push(RxPacket::new(
            hdr,
            self.cur.hdr_len,
            (seg_start, seg_count, lens_start),
            len as u32,
            &wb,
        ));
        self.cur.descs = 0;
        self.cur.hdr_len = 0;
        self.stats.packets += 1;
        self.stats.bytes += len as u64;
        Outcome::Delivered
    }

    fn mark(&mut self, r: DropReason) {
        self.cur.bad.get_or_insert(r);
    }

    /// Drops the frame being assembled: counts it, recycles its buffers.
    fn drop_current(&mut self) {
        let reason = self.cur.bad.take().unwrap_or(DropReason::RxError);
        self.stats.drops[reason as usize] += 1;
        if let Some(h) = self.cur.hdr.take() {
            self.hdrs.recycle(h);
        }
        self.pages.recycle_bulk(self.cur.segs.drain(..));
        self.cur.seg_lens.clear();
        self.cur.descs = 0;
        self.cur.hdr_len = 0;
    }

    /// Posts fresh buffers into every empty slot but one, then writes the
    /// tail once. Buffers come in bulk, one call per pool (spares first):
    /// payload pages, then as many header slots; a page left without a
    /// header goes back. Each descriptor is then written once, both
    /// addresses. Never inlined: one call per poll, and profilers see it
    /// (`scripts/bench-rx.sh --callgrind` counts it).
    #[inline(never)]
    fn refill(&mut self) {
        if self.stopped {
            return;
        }
        let mask = self.ring.mask;
        let start = self.next_fill;
        // Every empty slot but one: the tail never catches up with the head.
        let room = self.next_clean.wrapping_sub(start + 1) & mask;
        if room == 0 {
            return;
        }
        let old = self.posted_pages.len();
        // What the spares lack comes from the pool, into the spares; then
        // `room` of them move to the posted queue in bulk.
        let spare = &mut self.spare_pages;
        if let Some(want) = room.checked_sub(spare.len()).filter(|&w| w > 0) {
            self.pages.alloc_bulk(want, |b| spare.push(b));
        }
        let at = spare.len().saturating_sub(room);
        let mut n = self.posted_pages.append_from(spare, at);
        if self.split != SplitMode::Off {
            let spare = &mut self.spare_hdrs;
            if let Some(want) = n.checked_sub(spare.len()).filter(|&w| w > 0) {
                self.hdrs.alloc_bulk(want, |b| spare.push(b));
            }
            let at = spare.len().saturating_sub(n);
            let h = self.posted_hdrs.append_from(spare, at);
            // Pages left without a header slot go back (never posted: the
            // tail stops before them).
            for _ in h..n {
                if let Some(p) = self.posted_pages.pop_back() {
                    self.pages.recycle(p);
                }
            }
            n = h;
        }
        // Both addresses into each new slot. The two queues move in step
        // (same pushes and pops), so their pieces pair up; without split
        // the header address is 0.
        let ring = &self.ring;
        let (pa, pb) = self.posted_pages.slices_from(old);
        let (ha, hb) = self.posted_hdrs.slices_from(old);
        let mut i = start;
        if self.split != SplitMode::Off && (pa.len(), pb.len()) == (ha.len(), hb.len()) {
            for (ps, hs) in [(pa, ha), (pb, hb)] {
                for (p, h) in ps.iter().zip(hs) {
                    ring.slot(i).write_rx_read(p.iova(), h.iova());
                    i = (i + 1) & mask;
                }
            }
        } else {
            for p in pa.iter().chain(pb) {
                ring.slot(i).write_rx_read(p.iova(), 0);
                i = (i + 1) & mask;
            }
            let mut i = start;
            for h in ha.iter().chain(hb) {
                ring.slot(i).write_rx_hdr(h.iova());
                i = (i + 1) & mask;
            }
        }
        if n < room {
            self.stats.refill_short += 1;
        }
        if n > 0 {
            self.next_fill = (start + n) & mask;
            // Descriptors first, then the doorbell.
            fence(Ordering::Release);
            self.dev.write32(self.reg(Q_TAIL), self.next_fill as u32);
            self.stats.doorbells += 1;
        }
    }

    /// Takes back every buffer of `batch` (owner fast path) and empties it,
    /// ready for the next poll. The buffers wait in the ring's spare lists
    /// for the next refill, up to a ring's worth each; the rest go back to
    /// the pools. A batch of this ring can hold only this ring's buffers (it
    /// is filled by `poll` alone and lends them out only by reference), so
    /// they need no validation. Never inlined: one call per batch costs
    /// nothing per packet, and keeps the function visible to profilers
    /// (`scripts/bench-rx.sh --callgrind` counts it).
    #[inline(never)]
    pub fn recycle(&mut self, batch: &mut RxBatch) {
        if batch.ring_id != self.ring_id {
            // Another ring's buffers: send them home, not into our pools.
            batch.give_back();
            return;
        }
        // A stopped ring posts nothing more: everything to the pools.
        let cap = if self.stopped { 0 } else { self.ring.mask + 1 };
        batch.clear();
        // The usual case, spares used up by the last refill: the batch's
        // lists become the spare lists, no buffer moves.
        if self.spare_hdrs.is_empty() && batch.hdrs.len() <= cap {
            std::mem::swap(&mut self.spare_hdrs, &mut batch.hdrs);
        } else {
            let room = cap.saturating_sub(self.spare_hdrs.len());
            let mut hdrs = batch.hdrs.drain(..);
            self.spare_hdrs.extend(hdrs.by_ref().take(room));
            self.hdrs.recycle_bulk(hdrs);
        }
        if self.spare_pages.is_empty() && batch.segs.len() <= cap {
            std::mem::swap(&mut self.spare_pages, &mut batch.segs);
        } else {
            let room = cap.saturating_sub(self.spare_pages.len());
            let mut segs = batch.segs.drain(..);
            self.spare_pages.extend(segs.by_ref().take(room));
            self.pages.recycle_bulk(segs);
        }
    }

    pub fn stats(&self) -> &RxStats {
        &self.stats
    }
    pub fn queue(&self) -> u32 {
        self.queue
    }
    pub fn ring_size(&self) -> usize {
        self.ring.mask + 1
    }
    /// Descriptors currently posted to the device.
    pub fn posted(&self) -> usize {
        (self.next_fill.wrapping_sub(self.next_clean)) & self.ring.mask
    }
    /// Software view of the tail (the last value written to RDT).
    pub fn tail(&self) -> usize {
        self.next_fill
    }
    /// Next descriptor the driver expects the device to complete.
    pub fn next_clean(&self) -> usize {
        self.next_clean
    }
    /// The device's head register (an MMIO read: slow on hardware; for
    /// tests and diagnostics).
    /// Frames the device dropped for this queue since the last read
    /// (RQDPC, clear on read): one register read.
    pub fn hw_drops(&self) -> u32 {
        self.dev.read32(crate::regs::rqdpc(self.queue))
    }
    pub fn hw_head(&self) -> u32 {
        self.dev.read32(self.reg(Q_HEAD))
    }
    pub fn pools(&mut self) -> (&mut P, &mut H) {
        (&mut self.pages, &mut self.hdrs)
    }
    /// Installs (or with `None` removes) an observer called with every
    /// completed write-back the driver reads, in ring order, with its
    /// descriptor index: tracing and the simulator-vs-hardware differential.
    /// Costs one branch per descriptor when unset. Returns the previous
    /// observer (dropping it, e.g. to flush a log, is the caller's choice).
    pub fn set_wb_observer(&mut self, obs: Option<WbObserver>) -> Option<WbObserver> {
        std::mem::replace(&mut self.wb_observer, obs)
    }

    /// Direct access to a descriptor (tests and fault injection).
    pub fn descriptor(&self, i: usize) -> Option<&DescSlot> {
        (i <= self.ring.mask).then(|| self.ring.slot(i))
    }

    /// Stops the queue and takes back every posted buffer. Idempotent.
    /// The caller must make sure the device has stopped DMA to this queue
    /// (hardware: RXDCTL.ENABLE reads back clear, which we wait for).
    /// Whether the device dropped this queue behind the driver's back (a
    /// device reset clears RXDCTL.ENABLE): one register read, for a periodic
    /// health check, not for every poll.
    pub fn device_lost(&self) -> bool {
        !self.stopped && self.dev.read32(self.reg(Q_DCTL)) & DCTL_QUEUE_ENABLE == 0
    }

    /// Starts the queue afresh after a device reset: every posted buffer
    /// and any half-assembled frame go back to the pools (frames the device
    /// completed but the driver had not harvested are lost; the descriptors
    /// are counted in `restart_reclaimed`), then the queue is programmed and refilled as at
    /// creation. The descriptor memory and the pools are kept.
    pub fn restart(&mut self) -> Result<(), IgbError> {
        let pending = self.posted();
        self.stop()?;
        self.stats.restarts += 1;
        self.stats.restart_reclaimed += pending as u64;
        self.next_clean = 0;
        self.next_fill = 0;
        self.stopped = false;
        self.program()
    }

    pub fn stop(&mut self) -> Result<(), IgbError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let ok = self.regs().disable(&*self.dev);
        let mut bufs = Vec::new();
        self.posted_pages.move_front_to(usize::MAX, &mut bufs);
        self.pages.recycle_bulk(bufs.drain(..));
        self.posted_hdrs.move_front_to(usize::MAX, &mut bufs);
        self.hdrs.recycle_bulk(bufs.drain(..));
        self.pages.recycle_bulk(self.spare_pages.drain(..));
        self.hdrs.recycle_bulk(self.spare_hdrs.drain(..));
        self.cur.bad.get_or_insert(DropReason::NoEop);
        if self.cur.descs > 0 {
            self.drop_current();
        }
        self.cur.bad = None;
        self.next_clean = self.next_fill;
        if ok {
            Ok(())
        } else {
            Err(IgbError::QueueDisableTimeout(self.queue))
        }
    }
}

impl<P: BufPool, H: BufPool> Drop for RxRing<P, H> {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("RX queue {}: {e}", self.queue);
        }
    }
}

enum Outcome {
    More,
    Dropped,
    Delivered,
}

/// Header and payload bytes of a frame the fast path hands out as it is:
/// wholly in one descriptor, no error, overflow or HBO bit, a payload of
/// 1..=`pkt_buf` bytes, and header bytes exactly when the ring splits
/// (`hdr_min ..= hdr_min + hdr_span - 1`: 1..=header buffer, or only 0),
/// so its header slot and payload page both go to the batch. `split_sel`
/// is [`RxRing`]'s: the dword 0 bits that make HDR_LEN count. `None` sends
/// the descriptor to [`RxRing::consume`], which validates it field by
/// field. Only for a descriptor that starts a frame.
#[inline(always)]
fn fast_lens(
    wb: &RxWriteBack,
    split_sel: u32,
    pkt_buf: u32,
    (hdr_min, hdr_span): (u32, u32),
) -> Option<(u32, u32)> {
    // DD and EOP set; RXE, IPE, TCPE, frame errors and HBO clear.
    const MUST: u32 = 0b11;
    const MASK: u32 = 0xFF80_0000 | MUST;
    let hdr_len = if wb.info.0 & split_sel != 0 {
        wb.info.hdr_len()
    } else {
        0
    };
    let pkt_len = wb.len.pkt_len();
    // Each length in its range in one comparison.
    let ok = wb.status.0 & MASK == MUST
        && pkt_len.wrapping_sub(1) < pkt_buf
        && hdr_len.wrapping_sub(hdr_min) < hdr_span;
    ok.then_some((hdr_len, pkt_len))
}
