//! A smoltcp [`phy::Device`] over one RX/TX queue pair of the driver.
//!
//! Receive: [`receive`](phy::Device::receive) polls the RX ring for a batch when no
//! frame is waiting, moves each packet's buffers into the [`Presenter`]
//! (which makes them contiguous in place) and hands smoltcp one frame per
//! token. When smoltcp has consumed a frame (it copied any TCP payload into
//! the socket's receive ring: the one copy), the buffer goes straight back
//! to its pool on the owner fast path.
//!
//! Transmit: a [`TxToken`] lends smoltcp a TX pool buffer to build the
//! frame in, and queues it; [`QueueDevice::flush`] posts everything queued
//! with one tail write and reclaims completed buffers. Frames longer than a
//! TX buffer are built in a scratch buffer and copied over several
//! descriptors.

use crate::frame::{Frame, PresentStats, Presenter};
use crate::segstats::SegStats;
use crossbeam_queue::ArrayQueue;
use driver::{Buf, BufPool, RxBatch, TxBuf};
use pipeline::{RxQueue, TxQueue};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::sync::Arc;

/// Transmit counters of a [`QueueDevice`].
///
/// Every frame smoltcp builds is either posted to the TX ring or counted
/// in `dropped`, under one of the reasons below. When the ring has no
/// free slot (or the pool no buffer), [`phy::Device::transmit`] says so
/// (`busy`) instead of taking a frame it could not send: smoltcp then keeps
/// the data and sends it on a later poll, so nothing is lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TxSideStats {
    /// Frames smoltcp built.
    pub frames: u64,
    /// Frames copied over several buffers (longer than one TX buffer).
    pub multi_buffer: u64,
    /// Frames dropped, all reasons: the sum of the `dropped_*` counters.
    pub dropped: u64,
    /// Dropped: no TX buffer free (only a reply built while receiving can
    /// meet this; `transmit` reserves its buffer first).
    pub dropped_no_buffer: u64,
    /// Dropped: no descriptor free when the frame was to be posted (a
    /// reply built while receiving, a frame of several buffers, or a ring
    /// that was stopped).
    pub dropped_ring_full: u64,
    /// Dropped: longer than the ring can ever carry.
    pub dropped_too_long: u64,
    /// Times `transmit` refused smoltcp a token because the ring was full
    /// (backpressure: the frame was not built, nothing was lost).
    pub busy: u64,
    /// ARP replies not sent because another queue's interface answers ARP
    /// (see [`ArpRole`]).
    pub arp_replies_suppressed: u64,
}

/// ARP frames waiting for one queue's interface.
type ArpInbox = Arc<ArrayQueue<Vec<u8>>>;

/// How a queue's interface takes part in ARP when several queues share one
/// MAC and IP address. RSS steers frames without IP (ARP among them) to
/// queue 0 only, yet every queue's interface must know its peers' MAC
/// addresses. So queue 0 (the leader) hands a copy of every ARP frame it
/// receives to the other queues (the followers); the followers learn from
/// them but do not answer, so a request gets one reply. ARP is rare: the
/// copies cost nothing on the data path.
pub enum ArpRole {
    Leader(Vec<ArpInbox>),
    Follower(ArpInbox),
}

/// Roles for `queues` queues sharing an address: index 0 leads.
pub fn arp_roles(queues: usize) -> Vec<ArpRole> {
    let inboxes: Vec<ArpInbox> = (1..queues.max(1))
        .map(|_| Arc::new(ArrayQueue::new(64)))
        .collect();
    std::iter::once(ArpRole::Leader(inboxes.clone()))
        .chain(inboxes.into_iter().map(ArpRole::Follower))
        .collect()
}

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

fn is_arp(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&ETHERTYPE_ARP[..])
}

fn is_arp_reply(frame: &[u8]) -> bool {
    is_arp(frame) && frame.get(20..22) == Some(&[0, 2][..])
}

/// Settings of a [`QueueDevice`].
#[derive(Clone, Copy, Debug)]
pub struct DeviceConfig {
    /// IP MTU announced to smoltcp (the Ethernet frame is 14 bytes more).
    pub mtu: usize,
    /// Packets taken from the RX ring per poll.
    pub rx_batch: usize,
    /// Frames queued before TX is flushed without waiting for
    /// [`QueueDevice::flush`].
    pub tx_batch: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig {
            mtu: 1500,
            rx_batch: 32,
            tx_batch: 32,
        }
    }
}

/// How smoltcp should treat checksums on this device: compute them on
/// transmit, never verify on receive (the device or the [`Presenter`] did).
/// ICMP is left to smoltcp both ways.
pub fn checksum_caps() -> ChecksumCapabilities {
    let mut c = ChecksumCapabilities::default();
    c.ipv4 = Checksum::Tx;
    c.tcp = Checksum::Tx;
    c.udp = Checksum::Tx;
    c.icmpv4 = Checksum::Both;
    c
}

struct TxSide {
    ring: TxQueue,
    queued: Vec<TxBuf>,
    scratch: Vec<u8>,
    batch: usize,
    stats: TxSideStats,
    /// An ARP follower: our ARP replies are not sent.
    quiet_arp: bool,
    /// Segment counters, when tracked (both directions: a token borrows
    /// only this side).
    segs: Option<SegStats>,
    /// smoltcp's time at the last `transmit` or `receive`.
    now: Instant,
}

/// Why a frame smoltcp built was not sent.
#[derive(Clone, Copy, Debug)]
enum TxDrop {
    NoBuffer,
    RingFull,
    TooLong,
}

impl TxSide {
    /// Posts what is queued and reclaims completed descriptors. Admission
    /// ([`TxSide::reserve`], `build`) keeps the queued buffers within the
    /// ring's free slots, so everything fits unless the ring was stopped.
    fn flush(&mut self) {
        self.ring.clean();
        if !self.queued.is_empty() {
            self.ring.send(&mut self.queued);
            if !self.queued.is_empty() {
                // The ring is full (or stopped): reclaim and try once more,
                // then drop, counted.
                self.ring.clean();
                self.ring.send(&mut self.queued);
                for b in self.queued.drain(..) {
                    if b.eop {
                        self.stats.dropped += 1;
                        self.stats.dropped_ring_full += 1;
                    }
                    self.ring.free(b.buf);
                }
            }
        }
    }

    /// Whether `bufs` more buffers can be queued and still fit the ring,
    /// posting what is queued and reclaiming completed descriptors first if
    /// they would not.
    fn room_for(&mut self, bufs: usize) -> bool {
        if self.queued.len() + bufs <= self.ring.free_slots() {
            return true;
        }
        self.flush();
        self.queued.len() + bufs <= self.ring.free_slots()
    }

    /// A descriptor slot and a buffer for one more frame, or `None` when
    /// the ring or the pool is exhausted right now.
    fn reserve(&mut self) -> Option<Buf> {
        if !self.room_for(1) {
            return None;
        }
        self.ring.alloc().or_else(|| {
            self.ring.clean();
            self.ring.alloc()
        })
    }

    fn drop_frame(&mut self, reason: TxDrop) {
        self.stats.dropped += 1;
        match reason {
            TxDrop::NoBuffer => self.stats.dropped_no_buffer += 1,
            TxDrop::RingFull => self.stats.dropped_ring_full += 1,
            TxDrop::TooLong => self.stats.dropped_too_long += 1,
        }
    }

    /// Builds a frame of `len` bytes with `f` in `reserved` (a buffer
    /// [`TxSide::reserve`] set aside with its slot) or, without one, in a
    /// buffer taken now, and queues it.
    fn build<R>(&mut self, reserved: Option<Buf>, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.stats.frames += 1;
        let blen = self.ring.buf_len();
        if len <= blen {
            let buf = match reserved {
                Some(b) => Ok(b),
                None if self.room_for(1) => self.ring.alloc().ok_or(TxDrop::NoBuffer),
                None => Err(TxDrop::RingFull),
            };
            match buf {
                Err(reason) => {
                    // Still built (smoltcp expects its closure to run), then dropped.
                    self.scratch.clear();
                    self.scratch.resize(len, 0);
                    let r = f(&mut self.scratch);
                    if let Some(s) = &mut self.segs {
                        s.built_not_sent(&self.scratch);
                    }
                    self.drop_frame(reason);
                    return r;
                }
                Ok(mut buf) => {
                    let bytes = buf.as_mut_slice(len);
                    let r = f(bytes);
                    if let Some(s) = &mut self.segs {
                        s.tx(bytes, self.now);
                    }
                    if self.quiet_arp && is_arp_reply(bytes) {
                        self.stats.arp_replies_suppressed += 1;
                        self.ring.free(buf);
                        return r;
                    }
                    self.queued.push(TxBuf {
                        buf,
                        len: len as u16,
                        eop: true,
                    });
                    if self.queued.len() >= self.batch {
                        self.flush();
                    }
                    return r;
                }
            }
        }
        if let Some(b) = reserved {
            // A frame of several buffers takes its buffers below.
            self.ring.free(b);
        }
        // Too long for one buffer: build aside, copy over several.
        self.scratch.clear();
        self.scratch.resize(len, 0);
        let r = f(&mut self.scratch);
        if let Some(s) = &mut self.segs {
            // Counted sent below, or dropped: smoltcp's state follows it either way.
            s.built_not_sent(&self.scratch);
        }
        let need = len.div_ceil(blen.max(1));
        // One slot always stays empty: free + in flight is the most a frame can take.
        if need > self.ring.free_slots() + self.ring.in_flight() {
            self.drop_frame(TxDrop::TooLong);
            return r;
        }
        if !self.room_for(need) {
            self.drop_frame(TxDrop::RingFull);
            return r;
        }
        let mut bufs = Vec::with_capacity(need);
        for _ in 0..need {
            match self.ring.alloc() {
                Some(b) => bufs.push(b),
                None => break,
            }
        }
        if bufs.len() < need {
            for b in bufs {
                self.ring.free(b);
            }
            self.drop_frame(TxDrop::NoBuffer);
            return r;
        }
        self.stats.multi_buffer += 1;
        if let Some(s) = &mut self.segs {
            s.tx(&self.scratch, self.now);
        }
        for (i, (mut buf, chunk)) in bufs.into_iter().zip(self.scratch.chunks(blen)).enumerate() {
            buf.as_mut_slice(chunk.len()).copy_from_slice(chunk);
            self.queued.push(TxBuf {
                buf,
                len: chunk.len() as u16,
                eop: i + 1 == need,
            });
        }
        self.flush();
        r
    }
}

/// Called with every received frame, reassembled (see
/// [`QueueDevice::set_capture`]).
pub type Capture = Box<dyn FnMut(&[u8]) + Send>;

/// One RX/TX queue pair as a smoltcp device.
pub struct QueueDevice {
    rx: RxQueue,
    batch: RxBatch,
    presenter: Presenter,
    tx: TxSide,
    cfg: DeviceConfig,
    capture: Option<(Capture, Vec<u8>)>,
    arp: Option<ArpRole>,
    arp_stats: ArpStats,
    /// Device-reset recovery and the watchdog ([`QueueDevice::check`]).
    watch: Option<driver::QueueWatch>,
}

/// ARP frames shared between queues (see [`ArpRole`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArpStats {
    /// Leader: copies handed to followers.
    pub shared: u64,
    /// Leader: copies lost because a follower's inbox was full.
    pub inbox_full: u64,
    /// Follower: ARP frames received from the leader.
    pub received: u64,
}

impl QueueDevice {
    pub fn new(mut rx: RxQueue, tx: TxQueue, cfg: DeviceConfig) -> Self {
        let headroom = rx.pools().0.headroom();
        let batch = rx.new_batch(cfg.rx_batch.max(1));
        QueueDevice {
            rx,
            batch,
            presenter: Presenter::new(headroom),
            tx: TxSide {
                ring: tx,
                queued: Vec::with_capacity(cfg.tx_batch.max(1) * 2),
                scratch: Vec::new(),
                batch: cfg.tx_batch.max(1),
                stats: TxSideStats::default(),
                quiet_arp: false,
                segs: None,
                now: Instant::ZERO,
            },
            cfg,
            capture: None,
            arp: None,
            arp_stats: ArpStats::default(),
            watch: None,
        }
    }

    /// Lets [`QueueDevice::check`] recover the queue pair (from a port's
    /// queue: `pipeline::Queue::watch`).
    pub fn set_watch(&mut self, watch: driver::QueueWatch) {
        self.watch = Some(watch);
    }

    /// The health check of the queue pair (see `driver::recovery`): call it
    /// every few dozen polling rounds. Without a watch: always `Ok`.
    pub fn check(&mut self, now: std::time::Instant) -> driver::Health {
        self.rx
            .check(self.watch.as_mut(), Some(&mut self.tx.ring), now)
    }

    /// Takes the rings (and the watch) back, every buffer the device layer
    /// held returned to its pool; the rings keep running.
    pub fn into_parts(mut self) -> (RxQueue, TxQueue, Option<driver::QueueWatch>) {
        let (pages, hdrs) = self.rx.pools();
        self.presenter.release_all(pages, hdrs);
        self.rx.recycle(&mut self.batch);
        for b in self.tx.queued.drain(..) {
            self.tx.ring.free(b.buf);
        }
        (self.rx, self.tx.ring, self.watch)
    }

    /// Makes this queue's interface an ARP leader or follower (several
    /// queues sharing one address; see [`ArpRole`]).
    pub fn set_arp_role(&mut self, role: ArpRole) {
        self.tx.quiet_arp = matches!(role, ArpRole::Follower(_));
        self.arp = Some(role);
    }

    pub fn arp_stats(&self) -> &ArpStats {
        &self.arp_stats
    }

    /// Hands every received frame, as it came off the wire (header and
    /// payload buffers joined: a copy), to `f` before the stack sees it; for
    /// `--pcap-out`. Costs a copy per frame while set.
    pub fn set_capture(&mut self, f: Capture) {
        self.capture = Some((f, Vec::with_capacity(16384)));
    }

    /// Posts queued TX frames (one tail write) and reclaims completed ones.
    /// Call after each `Interface::poll`.
    pub fn flush(&mut self) {
        self.tx.flush();
    }

    /// Polls the RX ring into the presenter; returns the packets taken.
    fn fill(&mut self) -> usize {
        let n = self.rx.poll(&mut self.batch, self.cfg.rx_batch.max(1));
        if let (Some((f, buf)), true) = (&mut self.capture, n > 0) {
            for p in self.batch.iter() {
                buf.clear();
                buf.extend_from_slice(p.header());
                for s in p.segments() {
                    buf.extend_from_slice(s);
                }
                f(buf);
            }
        }
        if let (Some(ArpRole::Leader(inboxes)), true) = (&self.arp, n > 0) {
            for p in self.batch.iter() {
                let head = match p.header() {
                    [] => p.segments().next().unwrap_or(&[]),
                    h => h,
                };
                if is_arp(head) {
                    let frame = p.to_vec();
                    for inbox in inboxes {
                        match inbox.push(frame.clone()) {
                            Ok(()) => self.arp_stats.shared += 1,
                            Err(_) => self.arp_stats.inbox_full += 1,
                        }
                    }
                }
            }
        }
        if n > 0 {
            let (pages, hdrs) = self.rx.pools();
            let p = &mut self.presenter;
            self.batch.drain_packets(|pkt| p.push(pkt, pages, hdrs));
        }
        n
    }

    /// Starts counting TCP segments by sequence number (see
    /// [`crate::segstats`]): retransmitted, out-of-order and duplicate
    /// segments received, zero-window advertisements and retransmissions
    /// sent, per connection. Costs a header parse per frame.
    pub fn track_segments(&mut self) {
        self.tx.segs.get_or_insert_with(SegStats::new);
    }

    /// The segment counters, if [`track_segments`](Self::track_segments) was called.
    pub fn seg_stats(&self) -> Option<&SegStats> {
        self.tx.segs.as_ref()
    }

    pub fn present_stats(&self) -> &PresentStats {
        self.presenter.stats()
    }
    pub fn tx_stats(&self) -> &TxSideStats {
        &self.tx.stats
    }
    pub fn rx_ring(&self) -> &RxQueue {
        &self.rx
    }
    pub fn rx_ring_mut(&mut self) -> &mut RxQueue {
        &mut self.rx
    }
    pub fn tx_ring(&self) -> &TxQueue {
        &self.tx.ring
    }

    /// Whether the device dropped the queue pair behind our back (a device
    /// reset): one register read, for a periodic health check.
    pub fn device_lost(&self) -> bool {
        self.rx.device_lost()
    }

    /// Restarts both rings after the device was brought up again
    /// (`Igb::reinit`): frames queued for TX and descriptors the device
    /// held are given up (counted in the rings' stats); frames already
    /// taken from the RX ring are still presented. TCP retransmits what
    /// was lost.
    pub fn restart(&mut self) -> Result<(), driver::IgbError> {
        for b in self.tx.queued.drain(..) {
            self.tx.ring.free(b.buf);
        }
        self.rx.restart()?;
        self.tx.ring.restart()
    }

    /// Stops both rings and returns every buffer to its pool; the rings are
    /// handed back for auditing, with the first error stopping them gave
    /// (a queue that did not confirm it stopped).
    pub fn shutdown(mut self) -> (RxQueue, TxQueue, Option<driver::IgbError>) {
        let (pages, hdrs) = self.rx.pools();
        self.presenter.release_all(pages, hdrs);
        self.rx.recycle(&mut self.batch);
        let e1 = self.rx.stop().err();
        for b in self.tx.queued.drain(..) {
            self.tx.ring.free(b.buf);
        }
        let e2 = self.tx.ring.stop().err();
        (self.rx, self.tx.ring, e1.or(e2))
    }
}

/// A received frame lent to smoltcp.
pub struct RxToken<'a> {
    frame: Option<Frame>,
    rx: &'a mut RxQueue,
    presenter: &'a mut Presenter,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let frame = self.frame.take().expect("a token holds its frame");
        let r = f(frame.bytes());
        let (pages, hdrs) = self.rx.pools();
        self.presenter.release(frame, pages, hdrs);
        r
    }
}

impl Drop for RxToken<'_> {
    fn drop(&mut self) {
        // A token smoltcp did not consume still gives its buffer back.
        if let Some(frame) = self.frame.take() {
            let (pages, hdrs) = self.rx.pools();
            self.presenter.release(frame, pages, hdrs);
        }
    }
}

/// A TX buffer lent to smoltcp. One from [`phy::Device::transmit`] holds
/// a buffer and a descriptor slot reserved for its frame; one handed out
/// with a received frame takes them when it is consumed (a reply), if
/// there are any.
pub struct TxToken<'a> {
    tx: &'a mut TxSide,
    reserved: Option<Buf>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(mut self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let reserved = self.reserved.take();
        self.tx.build(reserved, len, f)
    }
}

impl Drop for TxToken<'_> {
    fn drop(&mut self) {
        // Not consumed: the reserved buffer goes back.
        if let Some(b) = self.reserved.take() {
            self.tx.ring.free(b);
        }
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.tx.now = now;
        let shared_arp = match &self.arp {
            Some(ArpRole::Follower(inbox)) => inbox.pop(),
            _ => None,
        };
        let frame = match shared_arp {
            Some(v) => {
                self.arp_stats.received += 1;
                Frame::Copied(v)
            }
            None => {
                if self.presenter.ready() == 0 {
                    self.fill();
                }
                self.presenter.pop()?
            }
        };
        if let Some(s) = &mut self.tx.segs {
            s.rx(frame.bytes());
        }
        Some((
            RxToken {
                frame: Some(frame),
                rx: &mut self.rx,
                presenter: &mut self.presenter,
            },
            TxToken {
                tx: &mut self.tx,
                reserved: None,
            },
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.tx.now = now;
        // Refuse rather than accept a frame the ring cannot take: smoltcp
        // then keeps the segment and sends it on a later poll. (Accepting
        // it and dropping it in `flush` lost whole bursts silently.)
        match self.tx.reserve() {
            Some(buf) => Some(TxToken {
                tx: &mut self.tx,
                reserved: Some(buf),
            }),
            None => {
                self.tx.stats.busy += 1;
                None
            }
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.cfg.mtu + 14;
        caps.checksum = checksum_caps();
        caps
    }
}
