//! Receive path: from a frame on the wire to buffers and write-backs in an
//! RX ring, following QEMU 10's igb model (`igb_receive_internal`,
//! `igb_do_ps`, `igb_write_packet_to_guest`, `igb_write_adv_ps_rx_descr`).
//!
//! This module owns the per-frame decisions (link, RCTL.EN, oversize, the
//! address filter, queue choice, room in the ring), header-split placement
//! and the write-back contents. A frame is placed in two passes: [`plan`]
//! reads the descriptors and translates every IOVA the frame needs, then
//! [`RxPath::commit`] copies the bytes and stores the write-backs. A DMA
//! fault found while planning drops the frame with nothing written.
//!
//! [`plan`]: RxPath::plan

use crate::frames::{self, Parsed, L3, L4};
use crate::gro::RunInfo;
use crate::iommu::{DmaView, Hint};
use crate::nic::{RegDelta, SimNic, NUM_RA};
use crate::rss::{self, RssInfo, RssTables};
use crate::SimStats;
use driver::desc::*;
use driver::regs::*;

/// Packet type bit for IPv6 with extension headers (QEMU's
/// `E1000_ADVRXD_PKT_IP6E`), used instead of `PKT_TYPE_IPV6` then.
const PKT_TYPE_IPV6E: u32 = 1 << 3;
const PKT_TYPE_SCTP: u32 = 1 << 6;
const ETH_FCS_LEN: usize = 4;
const ETH_MTU: usize = 1500;

/// The test hook run on every write-back just before it is stored.
pub type RxWbHook = Box<dyn FnMut(u32, &mut RxWriteBack) + Send>;

/// Device-wide receive settings, read once per engine step.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RxSettings {
    pub rctl: u32,
    pub rxcsum: u32,
    pub rlpml: u32,
    pub mrqc: u32,
    /// MRQC and RXCSUM.PCSD turn RSS on (`rss::enabled`).
    pub rss_on: bool,
    pub link_up: bool,
    /// Stalled queues (fault hook), bit q for queue q.
    pub stalled: u32,
    /// RSS key and redirection table, loaded on first use in the step.
    rss: RssTables,
    rss_loaded: bool,
    /// Valid receive addresses (RAH.AV), loaded on first use in the step.
    ra: [[u8; 6]; NUM_RA as usize],
    ra_count: u8,
    ra_loaded: bool,
}

impl RxSettings {
    pub(crate) fn load(nic: &SimNic) -> RxSettings {
        let rxcsum = nic.load(RXCSUM);
        let mrqc = nic.load(MRQC);
        RxSettings {
            rctl: nic.load(RCTL),
            rxcsum,
            mrqc,
            rss_on: rss::enabled(mrqc, rxcsum),
            // QEMU keeps RLPML in a u16: frames over 64 KiB never pass.
            rlpml: nic.load(RLPML) & 0xFFFF,
            link_up: nic.link_is_up(),
            stalled: nic.stalled_queues(),
            ..RxSettings::default()
        }
    }

    fn ra_match(&mut self, nic: &SimNic, dst: &[u8]) -> bool {
        if !self.ra_loaded {
            self.ra_loaded = true;
            for i in 0..NUM_RA {
                let lo = nic.load(RAL0 + 8 * i).to_le_bytes();
                let hi = nic.load(RAH0 + 8 * i);
                if hi & RAH_AV != 0 {
                    let h = hi.to_le_bytes();
                    self.ra[self.ra_count as usize] = [lo[0], lo[1], lo[2], lo[3], h[0], h[1]];
                    self.ra_count += 1;
                }
            }
        }
        self.ra[..self.ra_count as usize]
            .iter()
            .any(|a| a[..] == dst[..6])
    }
}

/// Per-step counter deltas, flushed to the NIC once per step.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepStats {
    pub sim: SimStats,
    pub regs: RegDelta,
}

/// An RX ring's registers as the engine sees them during a step.
#[derive(Clone, Copy, Debug, Default)]
struct RxRing {
    loaded: bool,
    enabled: bool,
    base: u64,
    ndesc: u32,
    head: u32,
    tail: u32,
    srrctl: u32,
}

impl RxRing {
    fn load(nic: &SimNic, q: u32) -> RxRing {
        let b = rx_queue_base(q);
        RxRing {
            loaded: true,
            enabled: nic.load(b + Q_DCTL) & DCTL_QUEUE_ENABLE != 0,
            base: nic.load(b + Q_BAL) as u64 | (nic.load(b + Q_BAH) as u64) << 32,
            ndesc: nic.load(b + Q_LEN) / DESC_LEN as u32,
            head: nic.load(b + Q_HEAD) & 0xFFFF,
            tail: nic.load(b + Q_TAIL) & 0xFFFF,
            srrctl: nic.load(b + Q_SRRCTL),
        }
    }

    /// Descriptors the device owns (RDH..RDT-1), as QEMU counts them. A
    /// head or tail outside the ring means none.
    fn free(&self) -> u32 {
        if self.tail >= self.ndesc || self.head >= self.ndesc {
            0
        } else if self.head <= self.tail {
            self.tail - self.head
        } else {
            self.ndesc + self.tail - self.head
        }
    }
}

/// What happened to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RxOutcome {
    /// Written to a ring (possibly truncated, see `plan`).
    Delivered,
    /// Dropped and counted.
    Dropped,
    /// Accepted by the filters but the ring cannot hold it now. Not counted:
    /// the caller either keeps the frame (flow control) or calls
    /// [`RxPath::count_missed`].
    NoRoom,
}

/// Where one descriptor's bytes go: `len` frame bytes from `src` to `iova`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    iova: u64,
    src: usize,
    len: usize,
}

#[derive(Clone, Copy, Debug)]
struct PlannedDesc {
    desc_iova: u64,
    hdr: Span,
    pkt: Span,
    /// Zero bytes standing for the FCS after the payload (RCTL.SECRC clear).
    fcs: usize,
    wb: RxWriteBack,
}

/// Header-split result for one frame (QEMU's `IGBSplitDescriptorData` plus
/// `ps_hdr_len`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Split {
    /// Use the header buffer.
    pub do_ps: bool,
    /// Bytes copied to the header buffer.
    pub ps_hdr_len: usize,
    /// Write-back HDR_LEN.
    pub hdr_len: usize,
    pub sph: bool,
    pub hbo: bool,
}

/// QEMU's `igb_do_ps`: where (and whether) a frame of `size` bytes splits.
pub(crate) fn split(desctype: u32, hdr_buf: usize, size: usize, p: &Parsed) -> Split {
    let mut s = Split::default();
    let always = desctype == SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS;
    if !(always || desctype == SRRCTL_DESCTYPE_HDR_SPLIT) {
        return s;
    }
    if always && size <= hdr_buf {
        s.do_ps = true;
        s.ps_hdr_len = size;
        s.hdr_len = size;
        return s;
    }
    let handled = match p.l3 {
        L3::None => {
            s.hdr_len = hdr_buf;
            false
        }
        L3::Ipv4 | L3::Ipv6 => {
            let off = if !p.fragment && matches!(p.l4, L4::Tcp | L4::Udp) {
                p.l5_off
            } else {
                p.l4_off
            };
            // A header that claims to run past the frame ends with it.
            let off = off.min(size);
            s.sph = true;
            s.hdr_len = off;
            s.ps_hdr_len = off;
            s.hbo = off > hdr_buf;
            !s.hbo
        }
    };
    if handled {
        s.do_ps = true;
    } else if always {
        s.do_ps = true;
        s.ps_hdr_len = hdr_buf;
    }
    s
}

/// Packet-buffer size of a queue: SRRCTL.BSIZEPACKET, or RCTL.BSIZE when 0.
pub(crate) fn pkt_buf_size(srrctl: u32, rctl: u32) -> usize {
    if srrctl & SRRCTL_BSIZEPACKET_MASK != 0 {
        return srrctl_pkt_bytes(srrctl);
    }
    let bsize = (rctl & RCTL_BSIZE_MASK) >> 16;
    match (rctl & RCTL_BSEX != 0, bsize) {
        (true, 1) => 16384,
        (true, 2) => 8192,
        (true, 3) => 4096,
        (false, 1) => 1024,
        (false, 2) => 512,
        (false, 3) => 256,
        _ => 2048,
    }
}

/// What the receive path decides about a frame from one parse: its headers,
/// its queue and its RSS hash. GRO makes it for every frame it looks at and
/// hands it to [`RxPath::deliver`] with the frame (or with the coalesced
/// packet the frame started), so nothing is parsed or hashed twice.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Steered {
    pub parsed: Parsed,
    pub queue: u32,
    pub rss: RssInfo,
}

/// A runt padded with zeros to the minimum frame length, as the MAC pads
/// it. Only runts take this copy: callers check the length first.
#[cold]
pub(crate) fn padded(frame: &[u8]) -> [u8; frames::ETH_ZLEN] {
    let mut p = [0u8; frames::ETH_ZLEN];
    let n = frame.len().min(frames::ETH_ZLEN);
    p[..n].copy_from_slice(&frame[..n]);
    p
}

/// Which queue a frame goes to, and its RSS hash: queue 0 and no hash
/// unless RSS is on (see [`crate::rss`]).
#[inline]
pub(crate) fn steer(
    nic: &SimNic,
    set: &mut RxSettings,
    frame: &[u8],
    p: &Parsed,
) -> (u32, RssInfo) {
    if !set.rss_on {
        return (0, RssInfo::default());
    }
    steer_rss(nic, set, frame, p)
}

#[inline(never)]
fn steer_rss(nic: &SimNic, set: &mut RxSettings, frame: &[u8], p: &Parsed) -> (u32, RssInfo) {
    if !set.rss_loaded {
        set.rss_loaded = true;
        set.rss = RssTables::load(nic);
    }
    rss::classify(&set.rss, set.mrqc, frame, p)
}

/// EOP-only write-back contents: packet type, IP id and checksum status
/// (`igb_write_adv_rx_descr` + `igb_verify_csum_in_sw`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct EopMeta {
    pkt_type: u32,
    /// Low 4 bits of dword 0 (`RSS_TYPE_*`), when RSS hashed the frame.
    rss_type: u32,
    /// Dword 1: the IP id when `ipidv`, else the RSS hash (0 without RSS).
    rss: u32,
    ipidv: bool,
    /// IPv4 header checksum checked, and whether it was wrong.
    ipcs: bool,
    ipe: bool,
    /// TCP/UDP checksum checked (`udpcs` for UDP), and whether it was wrong.
    l4cs: bool,
    udpcs: bool,
    tcpe: bool,
}

impl EopMeta {
    fn of(f: &[u8], p: &Parsed, rxcsum: u32, rss: &RssInfo) -> EopMeta {
        let pkt_type = match p.l3 {
            L3::Ipv4 => PKT_TYPE_IPV4,
            L3::Ipv6 if p.ipv6_ext => PKT_TYPE_IPV6E,
            L3::Ipv6 => PKT_TYPE_IPV6,
            L3::None => 0,
        } | match p.l4 {
            L4::Tcp => PKT_TYPE_TCP,
            L4::Udp => PKT_TYPE_UDP,
            L4::Sctp => PKT_TYPE_SCTP,
            _ => 0,
        };
        let mut m = EopMeta {
            pkt_type,
            ..EopMeta::default()
        };
        m.set_rss(rss);
        if rxcsum & RXCSUM_PCSD == 0 && p.l3 == L3::Ipv4 {
            m.ipidv = true;
            m.rss = p.ip_id as u32;
        }
        if rxcsum & RXCSUM_IPOFLD != 0 {
            if let Some(ok) = frames::ipv4_header_ok(f, p) {
                m.ipcs = true;
                m.ipe = !ok;
            }
        }
        if rxcsum & RXCSUM_TUOFLD != 0 {
            if let Some(ok) = frames::l4_checksum_ok(f, p) {
                m.l4cs = true;
                m.tcpe = !ok;
                m.udpcs = p.l4 == L4::Udp;
            }
        }
        m
    }

    /// A TCP/IPv4 packet whose checksums the GRO engine verified (every
    /// coalesced segment was right): reported as checked and good.
    fn verified_tcp4(ip_id: u16, rxcsum: u32, rss: &RssInfo) -> EopMeta {
        let pcsd = rxcsum & RXCSUM_PCSD != 0;
        let mut m = EopMeta::default();
        m.set_rss(rss);
        EopMeta {
            pkt_type: PKT_TYPE_IPV4 | PKT_TYPE_TCP,
            rss_type: m.rss_type,
            rss: if pcsd { m.rss } else { ip_id as u32 },
            ipidv: !pcsd,
            ipcs: rxcsum & RXCSUM_IPOFLD != 0,
            ipe: false,
            l4cs: rxcsum & RXCSUM_TUOFLD != 0,
            udpcs: false,
            tcpe: false,
        }
    }

    /// RSS type and hash, as QEMU reports them whenever RSS is on (which
    /// implies RXCSUM.PCSD, so dword 1 is the hash).
    fn set_rss(&mut self, rss: &RssInfo) {
        if rss.enabled {
            self.rss_type = rss.rss_type;
            self.rss = rss.hash;
        }
    }

    fn apply(&self, wb: &mut RxWriteBack) {
        wb.info.set_pkt_type(self.pkt_type);
        wb.info.set_rss_type(self.rss_type);
        wb.rss = self.rss;
        let s = &mut wb.status;
        s.set_ipidv(self.ipidv);
        s.set_ipcs(self.ipcs);
        s.set_ipe(self.ipe);
        s.set_l4cs(self.l4cs);
        s.set_udpcs(self.udpcs);
        s.set_tcpe(self.tcpe);
    }
}

/// Receive-side state kept across steps: scratch space (no allocation per
/// frame once warm), the cached rings of the current step and the hook.
pub(crate) struct RxPath {
    plan: Vec<PlannedDesc>,
    rings: [RxRing; MAX_QUEUES as usize],
    pub(crate) hook: Option<RxWbHook>,
    /// The queue of the last frame delivered (what a scheduled stall hits).
    pub(crate) last_queue: u32,
}

impl RxPath {
    pub(crate) fn new() -> RxPath {
        RxPath {
            plan: Vec::with_capacity(64),
            rings: [RxRing::default(); MAX_QUEUES as usize],
            hook: None,
            last_queue: 0,
        }
    }

    /// Forget ring registers cached during the last step.
    pub(crate) fn begin_step(&mut self) {
        for r in self.rings.iter_mut() {
            r.loaded = false;
        }
    }

    /// Counts `n` wire frames (a frame, or the segments of a coalesced
    /// packet) that found no room and are not kept for later.
    pub(crate) fn count_missed(st: &mut StepStats, n: u32) {
        st.sim.rx_missed += n as u64;
        st.regs.mpc = st.regs.mpc.saturating_add(n);
    }

    /// The largest frame (without FCS) queue `q` could ever hold: what a
    /// coalesced packet may grow to. 0 when the queue is off.
    pub(crate) fn ring_capacity(&mut self, nic: &SimNic, set: &RxSettings, q: u32) -> usize {
        let ring = &mut self.rings[q as usize];
        if !ring.loaded {
            *ring = RxRing::load(nic, q);
        }
        if !ring.enabled {
            return 0;
        }
        let fcs = if set.rctl & RCTL_SECRC != 0 {
            0
        } else {
            ETH_FCS_LEN
        };
        (ring.ndesc.saturating_sub(1) as usize * pkt_buf_size(ring.srrctl, set.rctl))
            .saturating_sub(fcs)
    }

    /// Runs one frame through the receive path. `loopback` frames come from
    /// our own transmitter (MAC loopback) and do not need the link.
    pub(crate) fn receive(
        &mut self,
        nic: &SimNic,
        view: &DmaView<'_>,
        set: &mut RxSettings,
        st: &mut StepStats,
        frame: &[u8],
        loopback: bool,
    ) -> RxOutcome {
        if !Self::accept(nic, set, st, frame, loopback) {
            return RxOutcome::Dropped;
        }
        if frame.len() < frames::ETH_ZLEN {
            return self.deliver(nic, view, set, st, &padded(frame), None, None);
        }
        self.deliver(nic, view, set, st, frame, None, None)
    }

    /// The MAC's per-frame checks before any ring is looked at: link,
    /// RCTL.EN, oversize, the address filter. Counts and returns `false`
    /// for a frame it drops.
    #[inline]
    pub(crate) fn accept(
        nic: &SimNic,
        set: &mut RxSettings,
        st: &mut StepStats,
        frame: &[u8],
        loopback: bool,
    ) -> bool {
        if !loopback && !set.link_up {
            st.sim.rx_link_down += 1;
            return false;
        }
        if set.rctl & RCTL_EN == 0 {
            st.sim.rx_disabled += 1;
            return false;
        }
        // The MAC pads runts to the minimum frame length (with zeros: a
        // missing byte reads as 0 below).
        let size = frame.len().max(frames::ETH_ZLEN);

        // Oversize (QEMU's igb_rx_is_oversized): RLPML counts the FCS.
        let vlan = if frame.get(12..14) == Some(&frames::ETHERTYPE_VLAN.to_be_bytes()[..]) {
            4
        } else {
            0
        };
        let oversize = if set.rctl & RCTL_LPE != 0 {
            size + ETH_FCS_LEN > set.rlpml as usize
        } else {
            size > frames::ETH_HLEN + vlan + ETH_MTU
        };
        if oversize {
            st.sim.rx_oversize += 1;
            st.regs.roc = st.regs.roc.saturating_add(1);
            return false;
        }

        // Address filter (e1000x_rx_group_filter without the MTA hash).
        let mut short = [0u8; 6];
        let dst = match frame.get(..6) {
            Some(d) => d,
            None => {
                short[..frame.len()].copy_from_slice(frame);
                &short[..]
            }
        };
        let accept = if dst == [0xFF; 6] {
            set.rctl & RCTL_BAM != 0
        } else if dst[0] & 1 != 0 {
            set.rctl & RCTL_MPE != 0
        } else {
            set.rctl & RCTL_UPE != 0
        };
        if !accept && !set.ra_match(nic, dst) {
            st.sim.rx_filtered += 1;
            return false;
        }
        true
    }

    /// Places an accepted frame (padded to the minimum length; parsed and
    /// steered here unless the caller did, as `steered`),
    /// or a coalesced packet (`run`, steered with its first segment), in its
    /// queue: room in the ring, the two placement passes and the counters.
    /// A coalesced packet's write-backs carry RSCCNT and checksum status
    /// from the segments' verification (see `gro`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn deliver(
        &mut self,
        nic: &SimNic,
        view: &DmaView<'_>,
        set: &mut RxSettings,
        st: &mut StepStats,
        frame: &[u8],
        steered: Option<&Steered>,
        run: Option<&RunInfo<'_>>,
    ) -> RxOutcome {
        debug_assert!(frame.len() >= frames::ETH_ZLEN, "callers pad runts");
        let size = frame.len();
        // Wire frames this packet stands for.
        let n = run.map_or(1, |r| r.segs());
        let own;
        let (parsed, q, rss) = match steered {
            Some(s) => (&s.parsed, s.queue, s.rss),
            None => {
                own = frames::parse(frame);
                let (q, rss) = steer(nic, set, frame, &own);
                (&own, q, rss)
            }
        };
        let ring = &mut self.rings[q as usize];
        if !ring.loaded {
            *ring = RxRing::load(nic, q);
        }
        if !ring.enabled {
            st.sim.rx_disabled += n as u64;
            return RxOutcome::Dropped;
        }
        if set.stalled & (1 << q) != 0 {
            st.sim.rx_stalled += n as u64;
            nic.add_rqdpc(q, n);
            return RxOutcome::Dropped;
        }
        let fcs = if set.rctl & RCTL_SECRC != 0 {
            0
        } else {
            ETH_FCS_LEN
        };
        let total = size + fcs;
        let pbuf = pkt_buf_size(ring.srrctl, set.rctl);
        // A frame the whole ring could never hold is missed even with flow
        // control: pausing the wire would stall it forever.
        if total > (ring.ndesc.saturating_sub(1)) as usize * pbuf {
            Self::count_missed(st, n);
            return RxOutcome::Dropped;
        }
        // igb_has_rxbufs: enough descriptors of packet-buffer size. The
        // driver may have refilled since we looked: reload the tail once.
        if total > ring.free() as usize * pbuf {
            ring.tail = nic.load(rx_queue_base(q) + Q_TAIL) & 0xFFFF;
            if total > ring.free() as usize * pbuf {
                return RxOutcome::NoRoom;
            }
        }
        let ring = *ring;
        match self.plan(view, &ring, set, frame, parsed, &rss, fcs, pbuf, run) {
            None => {
                st.sim.dma_faults += 1;
                RxOutcome::Dropped
            }
            Some(complete) => {
                let head = self.commit(nic, view, q, ring.head, ring.ndesc, frame);
                self.rings[q as usize].head = head;
                self.last_queue = q;
                if complete {
                    st.sim.rx_frames += 1;
                    st.sim.rx_bytes += size as u64;
                    st.regs.gprc = st.regs.gprc.saturating_add(n);
                    st.regs.gorc += run.map_or((size + ETH_FCS_LEN) as u64, |r| r.wire_bytes);
                    if n > 1 {
                        st.sim.gro_packets += 1;
                        st.sim.gro_segments += n as u64;
                    }
                } else {
                    // Ran out of descriptors before EOP (not reachable after
                    // the room check; counted rather than trusted).
                    st.sim.rx_missed += n as u64;
                }
                RxOutcome::Delivered
            }
        }
    }

    /// First pass (QEMU's igb_write_packet_to_guest without the writes):
    /// reads descriptors from RDH on and records where every byte goes.
    /// Returns `None` on a DMA fault (nothing written), else whether the
    /// frame reached EOP before the ring ran out (it always does once the
    /// room check passed; the check is kept as a bound).
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &mut self,
        view: &DmaView<'_>,
        ring: &RxRing,
        set: &RxSettings,
        frame: &[u8],
        p: &Parsed,
        rss: &RssInfo,
        fcs: usize,
        pbuf: usize,
        run: Option<&RunInfo<'_>>,
    ) -> Option<bool> {
        self.plan.clear();
        let size = frame.len();
        let total = size + fcs;
        let desctype = ring.srrctl & SRRCTL_DESCTYPE_MASK;
        let ps_type =
            desctype == SRRCTL_DESCTYPE_HDR_SPLIT || desctype == SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS;
        let sp = split(desctype, srrctl_hdr_bytes(ring.srrctl), size, p);
        let eop = match run {
            Some(r) => EopMeta::verified_tcp4(r.ip_id, set.rxcsum, rss),
            None => EopMeta::of(frame, p, set.rxcsum, rss),
        };
        // Segment payload starts not yet counted into a descriptor's RSCCNT.
        let mut starts: &[u32] = match run {
            Some(r) if r.segs() > 1 => r.starts,
            _ => &[],
        };

        let mut desc_offset = 0usize;
        let mut desc_size = 0usize;
        let mut pos = 0usize;
        let mut is_first = true;
        let mut head = ring.head;
        loop {
            if head == ring.tail || ring.tail >= ring.ndesc {
                return Some(false);
            }
            let desc_iova = ring.base.wrapping_add(head as u64 * DESC_LEN as u64);
            let (pkt_addr, hdr_addr) = view.desc(desc_iova)?.read_rx_read();
            let ba_hdr = if ps_type { hdr_addr } else { 0 };
            let mut d = PlannedDesc {
                desc_iova,
                hdr: Span::default(),
                pkt: Span::default(),
                fcs: 0,
                wb: RxWriteBack::zeroed(),
            };
            // QEMU skips descriptors whose buffer address is 0; here IOVA 0
            // is just an unmapped address (a DMA fault if bytes go there).
            if desc_offset < size {
                let first_ps = sp.do_ps && is_first;
                let cap = if first_ps { pbuf + sp.ps_hdr_len } else { pbuf };
                desc_size = (total - desc_offset).min(cap);
                let mut copy_size = (size - desc_offset).min(cap);
                if first_ps {
                    d.hdr = Span {
                        iova: ba_hdr,
                        src: pos,
                        len: sp.ps_hdr_len,
                    };
                    pos += sp.ps_hdr_len;
                    copy_size = copy_size.saturating_sub(sp.ps_hdr_len);
                    is_first = false;
                }
                d.pkt = Span {
                    iova: pkt_addr,
                    src: pos,
                    len: copy_size,
                };
                pos += copy_size;
                if desc_offset + desc_size >= total {
                    d.fcs = fcs;
                }
                if d.hdr.len > 0 {
                    view.translate(d.hdr.iova, d.hdr.len, Hint::Header)?;
                }
                if d.pkt.len + d.fcs > 0 {
                    view.translate(d.pkt.iova, d.pkt.len + d.fcs, Hint::Payload)?;
                }
            }
            desc_offset += desc_size;
            let last = desc_offset >= total;
            if !starts.is_empty() {
                // Frame bytes [0, pos) are placed by now.
                let here = starts.iter().take_while(|&&s| (s as usize) < pos).count();
                d.wb.info.set_rsc_cnt(here.min(15) as u32);
                starts = &starts[here..];
            }

            let wb = &mut d.wb;
            wb.status.set_dd(true);
            wb.len.set_pkt_len((d.pkt.len + d.fcs) as u32);
            if ps_type {
                wb.info.set_hdr_len(sp.hdr_len as u32 & 0x3FF);
                wb.info.set_sph(sp.sph);
                wb.status.set_hbo(sp.hbo);
            }
            if last {
                wb.status.set_eop(true);
                eop.apply(wb);
            }
            self.plan.push(d);
            head = if (head + 1) >= ring.ndesc {
                0
            } else {
                head + 1
            };
            if last {
                return Some(true);
            }
        }
    }

    /// Second pass: copies the bytes, stores each write-back (status last,
    /// Release) and advances RDH per descriptor. Returns the new head.
    fn commit(
        &mut self,
        nic: &SimNic,
        view: &DmaView<'_>,
        q: u32,
        mut head: u32,
        ndesc: u32,
        frame: &[u8],
    ) -> u32 {
        const ZEROS: [u8; ETH_FCS_LEN] = [0; ETH_FCS_LEN];
        let rdh = rx_queue_base(q) + Q_HEAD;
        for d in &self.plan {
            if d.hdr.len > 0 {
                if let Some(b) = view.translate(d.hdr.iova, d.hdr.len, Hint::Header) {
                    b.write(0, &frame[d.hdr.src..d.hdr.src + d.hdr.len]);
                }
            }
            if d.pkt.len + d.fcs > 0 {
                if let Some(b) = view.translate(d.pkt.iova, d.pkt.len + d.fcs, Hint::Payload) {
                    b.write(0, &frame[d.pkt.src..d.pkt.src + d.pkt.len]);
                    b.write(d.pkt.len, &ZEROS[..d.fcs]);
                }
            }
            let mut wb = d.wb;
            if let Some(hook) = self.hook.as_mut() {
                hook(q, &mut wb);
            }
            if let Some(slot) = view.desc(d.desc_iova) {
                slot.write_rx_wb(&wb);
            }
            head = if head + 1 >= ndesc { 0 } else { head + 1 };
            nic.store(rdh, head);
        }
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{Builder, Tcp};

    const ONEBUF: u32 = SRRCTL_DESCTYPE_ADV_ONEBUF;
    const SPLIT: u32 = SRRCTL_DESCTYPE_HDR_SPLIT;
    const ALWAYS: u32 = SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS;

    fn sp(desctype: u32, h: usize, f: &[u8]) -> Split {
        split(desctype, h, f.len(), &frames::parse(f))
    }

    #[test]
    fn split_rules_follow_qemu() {
        let b = Builder::default();
        let udp = b.udp_len(242, 1, 2);
        let s = sp(SPLIT, 256, &udp);
        assert_eq!(
            (s.do_ps, s.ps_hdr_len, s.hdr_len, s.sph, s.hbo),
            (true, 42, 42, true, false)
        );
        let s = sp(ALWAYS, 256, &udp);
        assert_eq!(
            (s.do_ps, s.ps_hdr_len, s.hdr_len, s.sph),
            (true, 242, 242, false)
        );
        assert_eq!(sp(ONEBUF, 256, &udp), Split::default());

        let non_ip = b.non_ip_len(300);
        let s = sp(SPLIT, 256, &non_ip);
        assert_eq!((s.do_ps, s.hdr_len, s.sph), (false, 256, false));
        let s = sp(ALWAYS, 256, &non_ip);
        assert_eq!(
            (s.do_ps, s.ps_hdr_len, s.hdr_len, s.sph),
            (true, 256, 256, false)
        );

        let icmp = b.icmp_echo(1, 1, &[0; 400]);
        let s = sp(SPLIT, 256, &icmp);
        assert_eq!((s.do_ps, s.ps_hdr_len, s.sph), (true, 34, true));

        let tcp = b.tcp(
            &Tcp {
                options: vec![1; 40],
                ..Tcp::default()
            },
            &[0; 100],
        );
        let s = sp(SPLIT, 64, &tcp);
        assert_eq!((s.do_ps, s.hdr_len, s.sph, s.hbo), (false, 94, true, true));
        let s = sp(ALWAYS, 64, &tcp);
        assert_eq!(
            (s.do_ps, s.ps_hdr_len, s.hdr_len, s.hbo),
            (true, 64, 94, true)
        );
    }

    #[test]
    fn buffer_sizes() {
        assert_eq!(pkt_buf_size(2, 0), 2048);
        assert_eq!(pkt_buf_size(1, 0), 1024);
        assert_eq!(pkt_buf_size(0, 0), 2048);
        assert_eq!(pkt_buf_size(0, 1 << 16), 1024);
        assert_eq!(pkt_buf_size(0, RCTL_BSEX | 1 << 16), 16384);
    }
}
