//! Tests of the whole model, driven the way a driver would: DMA regions
//! mapped through `driver::DmaSpace`, descriptors written with `DescSlot`,
//! registers written with `write32`, doorbells, `step()`, write-backs read
//! back. Memory is inspected through the simulated IOMMU, so no `unsafe`.

use crate::frames::{self, Builder, Tcp};
use crate::iommu::Hint;
use crate::wire::{GenConfig, Generator, QueueWire};
use crate::{SimConfig, SimEngine, SimNic, SimStats};
use driver::desc::*;
use driver::regs::*;
use driver::{DmaMapper, DmaRegion, DmaSpace, RegisterIo};
use std::sync::Arc;
use std::time::Duration;

const NDESC: u32 = 16;
const SLOT: usize = 16 * 1024; // per-descriptor buffer spacing
const HDR_SLOT: usize = 1024;
const SENTINEL: u8 = 0xEE;

struct Harness {
    nic: Arc<SimNic>,
    engine: SimEngine,
    wire: QueueWire,
    _space: Arc<DmaSpace>,
    ring: DmaRegion,
    pkts: DmaRegion,
    hdrs: DmaRegion,
    tx_ring: DmaRegion,
    tx_bufs: DmaRegion,
    /// Next RX descriptor to post.
    tail: u32,
    tx_tail: u32,
}

impl Harness {
    fn new(cfg: SimConfig) -> Harness {
        let wire = QueueWire::new();
        let (nic, engine) = SimNic::new(cfg, Box::new(wire.clone()));
        let space = DmaSpace::new(nic.clone() as Arc<dyn DmaMapper>);
        let alloc = |len| space.alloc(len).expect("DMA alloc");
        let h = Harness {
            ring: alloc(NDESC as usize * DESC_LEN),
            pkts: alloc(NDESC as usize * SLOT),
            hdrs: alloc(NDESC as usize * HDR_SLOT),
            tx_ring: alloc(NDESC as usize * DESC_LEN),
            tx_bufs: alloc(NDESC as usize * SLOT),
            nic,
            engine,
            wire,
            _space: space.clone(),
            tail: 0,
            tx_tail: 0,
        };
        h.fill(h.pkts.iova(), h.pkts.len(), SENTINEL);
        h.fill(h.hdrs.iova(), h.hdrs.len(), SENTINEL);
        h
    }

    /// RX queue 0 in `desctype` with `hdr` / `pkt` byte buffers, RX on
    /// (unicast + broadcast + multicast accepted, CRC stripped).
    fn rx_setup(&self, desctype: u32, hdr: usize, pkt: usize) {
        let n = &self.nic;
        let b = rx_queue_base(0);
        n.write32(b + Q_BAL, self.ring.iova() as u32);
        n.write32(b + Q_BAH, (self.ring.iova() >> 32) as u32);
        n.write32(b + Q_LEN, NDESC * DESC_LEN as u32);
        n.write32(
            b + Q_SRRCTL,
            desctype | ((hdr / 64) as u32) << SRRCTL_BSIZEHEADER_SHIFT | (pkt / 1024) as u32,
        );
        n.write32(b + Q_HEAD, 0);
        n.write32(b + Q_TAIL, 0);
        n.write32(b + Q_DCTL, DCTL_QUEUE_ENABLE);
        n.write32(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_UPE | RCTL_MPE);
    }

    fn rctl(&self, set: u32, clear: u32) {
        let v = self.nic.read32(RCTL);
        self.nic.write32(RCTL, (v | set) & !clear);
    }

    fn fill(&self, iova: u64, len: usize, byte: u8) {
        let v = self.nic.iommu.view();
        v.translate(iova, len, Hint::Payload)
            .unwrap()
            .write(0, &vec![byte; len]);
    }

    fn read(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let v = self.nic.iommu.view();
        v.translate(iova, len, Hint::Payload)
            .unwrap()
            .read_append(&mut out);
        out
    }

    fn desc(&self, ring: &DmaRegion, i: u32) -> [u32; 4] {
        let v = self.nic.iommu.view();
        v.desc(ring.iova_at(i as usize * DESC_LEN)).unwrap().raw()
    }

    fn pkt_iova(&self, i: u32) -> u64 {
        self.pkts.iova_at(i as usize * SLOT)
    }
    fn hdr_iova(&self, i: u32) -> u64 {
        self.hdrs.iova_at(i as usize * HDR_SLOT)
    }

    /// Posts `n` descriptors with their own buffers and rings the doorbell.
    fn post(&mut self, n: u32) {
        self.post_with(n, |h, i| (h.pkt_iova(i), h.hdr_iova(i)));
    }

    fn post_with(&mut self, n: u32, addrs: impl Fn(&Harness, u32) -> (u64, u64)) {
        {
            let v = self.nic.iommu.view();
            for _ in 0..n {
                let i = self.tail;
                let (p, h) = addrs(self, i);
                v.desc(self.ring.iova_at(i as usize * DESC_LEN))
                    .unwrap()
                    .write_rx_read(p, h);
                self.tail = (self.tail + 1) % NDESC;
            }
        }
        self.nic.write32(rx_queue_base(0) + Q_TAIL, self.tail);
    }

    fn wb(&self, i: u32) -> RxWriteBack {
        let v = self.nic.iommu.view();
        let slot = v.desc(self.ring.iova_at(i as usize * DESC_LEN)).unwrap();
        slot.read_rx_wb(slot.status_acquire())
    }

    fn pkt(&self, i: u32, len: usize) -> Vec<u8> {
        self.read(self.pkt_iova(i), len)
    }
    fn hdr(&self, i: u32, len: usize) -> Vec<u8> {
        self.read(self.hdr_iova(i), len)
    }

    fn rdh(&self) -> u32 {
        self.nic.read32(rx_queue_base(0) + Q_HEAD)
    }

    /// Sends one frame through the model and returns what `step` reported.
    fn rx(&mut self, frame: &[u8]) -> usize {
        self.wire.push(frame.to_vec());
        self.engine.step(64)
    }

    fn stats(&self) -> SimStats {
        self.nic.stats()
    }

    /// TX queue 0 on, TCTL.EN.
    fn tx_setup(&self) {
        let n = &self.nic;
        let b = tx_queue_base(0);
        n.write32(b + Q_BAL, self.tx_ring.iova() as u32);
        n.write32(b + Q_BAH, (self.tx_ring.iova() >> 32) as u32);
        n.write32(b + Q_LEN, NDESC * DESC_LEN as u32);
        n.write32(b + Q_HEAD, 0);
        n.write32(b + Q_TAIL, 0);
        n.write32(b + Q_DCTL, DCTL_QUEUE_ENABLE);
        n.write32(TCTL, TCTL_EN | TCTL_PSP);
    }

    /// Queues `frame` for transmit split over buffers of at most `chunk`
    /// bytes, one descriptor each; rings the TX doorbell. Returns the
    /// descriptor indices used.
    fn tx(&mut self, frame: &[u8], chunk: usize) -> Vec<u32> {
        let mut used = Vec::new();
        let chunks: Vec<&[u8]> = frame.chunks(chunk).collect();
        {
            let v = self.nic.iommu.view();
            for (k, c) in chunks.iter().enumerate() {
                let i = self.tx_tail;
                let iova = self.tx_bufs.iova_at(i as usize * SLOT);
                v.translate(iova, c.len(), Hint::Payload)
                    .unwrap()
                    .write(0, c);
                let cmd = TxCmdTypeLen::data(c.len() as u16, k + 1 == chunks.len());
                v.desc(self.tx_ring.iova_at(i as usize * DESC_LEN))
                    .unwrap()
                    .write_tx(iova, cmd, TxOlinfo::with_paylen(frame.len() as u32));
                used.push(i);
                self.tx_tail = (self.tx_tail + 1) % NDESC;
            }
        }
        self.nic.write32(tx_queue_base(0) + Q_TAIL, self.tx_tail);
        used
    }
}

fn cfg() -> SimConfig {
    SimConfig::default()
}

const ONEBUF: u32 = SRRCTL_DESCTYPE_ADV_ONEBUF;
const SPLIT: u32 = SRRCTL_DESCTYPE_HDR_SPLIT;
const ALWAYS: u32 = SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS;

fn hdr_info(wb: &RxWriteBack) -> (u32, bool, u32) {
    (wb.info.hdr_len(), wb.info.sph(), wb.len.pkt_len())
}

#[test]
fn onebuf_udp_whole_frame_in_packet_buffer() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 256, 2048);
    h.post(4);
    let f = Builder {
        ip_id: 0x1234,
        ..Builder::default()
    }
    .udp_len(242, 1000, 2000);
    assert_eq!(h.rx(&f), 1);
    let wb = h.wb(0);
    assert!(wb.status.dd() && wb.status.eop());
    assert_eq!(hdr_info(&wb), (0, false, 242));
    assert_eq!(wb.info.pkt_type(), PKT_TYPE_IPV4 | PKT_TYPE_UDP);
    // Default RXCSUM: IPOFLD | TUOFLD, PCSD clear -> IP id in dword 1.
    assert!(wb.status.ipcs() && wb.status.l4cs() && wb.status.udpcs());
    assert!(!wb.status.ipe() && !wb.status.tcpe() && !wb.status.hbo());
    assert!(wb.status.ipidv());
    assert_eq!(wb.rss, 0x1234);
    assert_eq!(h.pkt(0, 242), f);
    assert_eq!(h.pkt(0, 243)[242], SENTINEL);
    assert_eq!(
        h.hdr(0, 4),
        [SENTINEL; 4],
        "ONEBUF never touches the header buffer"
    );
    assert_eq!(h.rdh(), 1);
    let s = h.stats();
    assert_eq!((s.rx_frames, s.rx_bytes), (1, 242));
    assert_eq!(h.nic.read32(GPRC), 1);
    assert_eq!(h.nic.read32(GORCL), 246);
    assert_eq!(h.nic.read32(GORCH), 0);
}

#[test]
fn header_split_udp_242_and_1442() {
    let mut h = Harness::new(cfg());
    h.rx_setup(SPLIT, 256, 2048);
    h.post(4);
    let b = Builder::default();
    for (i, len) in [(0u32, 242usize), (1, 1442)] {
        let f = b.udp_len(len, 7, 9);
        h.rx(&f);
        let wb = h.wb(i);
        assert_eq!(hdr_info(&wb), (42, true, len as u32 - 42), "{len} B");
        assert!(wb.status.eop() && !wb.status.hbo());
        assert_eq!(h.hdr(i, 42), f[..42]);
        assert_eq!(h.hdr(i, 43)[42], SENTINEL);
        assert_eq!(h.pkt(i, len - 42), f[42..]);
    }
}

#[test]
fn header_split_non_ip_and_icmp() {
    let mut h = Harness::new(cfg());
    h.rx_setup(SPLIT, 256, 2048);
    h.post(4);
    let b = Builder::default();
    let f = b.non_ip_len(100);
    h.rx(&f);
    let wb = h.wb(0);
    // QEMU: not split, HDR_LEN = header buffer size, SPH 0.
    assert_eq!(hdr_info(&wb), (256, false, 100));
    assert_eq!(wb.info.pkt_type(), 0);
    assert!(!wb.status.ipcs() && !wb.status.l4cs() && !wb.status.ipidv());
    assert_eq!(h.pkt(0, 100), f);
    assert_eq!(h.hdr(0, 1), [SENTINEL]);

    // Other IP: split after the IP header.
    let f = b.icmp_echo(1, 2, &[7; 200]);
    h.rx(&f);
    let wb = h.wb(1);
    assert_eq!(hdr_info(&wb), (34, true, f.len() as u32 - 34));
    assert_eq!(wb.info.pkt_type(), PKT_TYPE_IPV4);
    assert!(wb.status.ipcs() && !wb.status.l4cs());
    assert_eq!(h.hdr(1, 34), f[..34]);
}

#[test]
fn split_always_small_frame_goes_to_header_buffer() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ALWAYS, 256, 2048);
    h.post(4);
    let b = Builder::default();
    let f = b.udp_len(242, 1, 2);
    h.rx(&f);
    let wb = h.wb(0);
    assert_eq!(hdr_info(&wb), (242, false, 0));
    assert!(wb.status.eop());
    assert_eq!(h.hdr(0, 242), f);
    assert_eq!(h.pkt(0, 1), [SENTINEL]);

    // Larger frames split as in HDR_SPLIT.
    let f = b.udp_len(600, 1, 2);
    h.rx(&f);
    assert_eq!(hdr_info(&h.wb(1)), (42, true, 558));

    // Non-IP larger than the header buffer: the first H bytes still go
    // there ("header not handled"), HDR_LEN = H, SPH 0.
    let f = b.non_ip_len(300);
    h.rx(&f);
    assert_eq!(hdr_info(&h.wb(2)), (256, false, 44));
    assert_eq!(h.hdr(2, 256), f[..256]);
    assert_eq!(h.pkt(2, 44), f[256..]);
}

#[test]
fn header_buffer_overflow_sets_hbo() {
    let mut h = Harness::new(cfg());
    h.rx_setup(SPLIT, 64, 2048);
    h.post(4);
    let f = Builder::default().tcp(
        &Tcp {
            options: vec![1; 40],
            ..Tcp::default()
        },
        &[5; 300],
    );
    assert_eq!(frames::parse(&f).l5_off, 94);
    h.rx(&f);
    let wb = h.wb(0);
    assert!(wb.status.hbo() && wb.status.eop());
    assert_eq!(hdr_info(&wb), (94, true, f.len() as u32));
    assert_eq!(wb.info.pkt_type(), PKT_TYPE_IPV4 | PKT_TYPE_TCP);
    assert!(wb.status.l4cs() && !wb.status.udpcs() && !wb.status.tcpe());
    assert_eq!(h.pkt(0, f.len()), f);
    assert_eq!(h.hdr(0, 1), [SENTINEL]);

    // HDR_SPLIT_ALWAYS: the first 64 bytes go to the header buffer anyway.
    h.nic.write32(
        rx_queue_base(0) + Q_SRRCTL,
        ALWAYS | 1 << SRRCTL_BSIZEHEADER_SHIFT | 2,
    );
    h.rx(&f);
    let wb = h.wb(1);
    assert!(wb.status.hbo());
    assert_eq!(hdr_info(&wb), (94, true, f.len() as u32 - 64));
    assert_eq!(h.hdr(1, 64), f[..64]);
    assert_eq!(h.pkt(1, f.len() - 64), f[64..]);
}

#[test]
fn jumbo_frame_spans_descriptors() {
    let mut h = Harness::new(cfg());
    h.rx_setup(SPLIT, 256, 2048);
    h.rctl(RCTL_LPE, 0);
    h.nic.write32(RLPML, 9216 + 4);
    h.post(8);
    let f = Builder::default().udp_len(9000, 1, 2);
    assert_eq!(h.rx(&f), 1);
    assert_eq!(h.rdh(), 5);
    let mut got = h.hdr(0, 42);
    let want_len = [2048u32, 2048, 2048, 2048, 9000 - 42 - 4 * 2048];
    for (i, &len) in want_len.iter().enumerate() {
        let wb = h.wb(i as u32);
        assert!(wb.status.dd());
        assert_eq!(wb.status.eop(), i == 4, "EOP only on the last descriptor");
        assert_eq!(hdr_info(&wb), (42, true, len));
        if i < 4 {
            assert_eq!(wb.info.pkt_type(), 0);
            assert!(!wb.status.l4cs());
        } else {
            assert_eq!(wb.info.pkt_type(), PKT_TYPE_IPV4 | PKT_TYPE_UDP);
            assert!(wb.status.l4cs() && !wb.status.tcpe());
        }
        if i > 0 {
            assert_eq!(
                h.hdr(i as u32, 1),
                [SENTINEL],
                "only the first header buffer is used"
            );
        }
        got.extend(h.pkt(i as u32, len as usize));
    }
    assert_eq!(got, f);
    assert!(!h.wb(5).status.dd());

    // One byte over RLPML (which counts the FCS) is oversize.
    h.rx(&Builder::default().udp_len(9217, 1, 2));
    assert_eq!(h.stats().rx_oversize, 1);
    assert_eq!(h.nic.read32(ROC), 1);
}

#[test]
fn oversize_without_lpe_and_runt_padding() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(4);
    let b = Builder::default();
    h.rx(&b.udp_len(1515, 1, 2));
    assert_eq!(h.stats().rx_oversize, 1);
    h.rx(&b.udp_len(1514, 1, 2));
    assert_eq!(h.stats().rx_frames, 1);
    // VLAN-tagged frames may be 4 bytes longer.
    h.rx(&Builder {
        vlan: Some(3),
        ..b.clone()
    }
    .udp_len(1518, 1, 2));
    assert_eq!(h.stats().rx_frames, 2);
    // Runts are padded to 60 bytes with zeros.
    let runt = b.non_ip(0x88B5, &[1, 2, 3]);
    h.rx(&runt);
    assert_eq!(h.wb(2).len.pkt_len(), 60);
    let mut want = runt.clone();
    want.resize(60, 0);
    assert_eq!(h.pkt(2, 60), want);
}

#[test]
fn fcs_kept_when_secrc_clear() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.rctl(0, RCTL_SECRC);
    h.post(2);
    let f = Builder::default().udp_len(100, 1, 2);
    h.rx(&f);
    assert_eq!(h.wb(0).len.pkt_len(), 104);
    assert_eq!(h.pkt(0, 104)[100..], [0, 0, 0, 0]);
}

#[test]
fn address_filter_and_rx_enable() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(8);
    h.rctl(0, RCTL_UPE | RCTL_MPE | RCTL_BAM);
    let ours = Builder::default();
    let other = Builder {
        dst_mac: [0x02, 9, 9, 9, 9, 9],
        ..Builder::default()
    };
    let bcast = Builder {
        dst_mac: [0xFF; 6],
        ..Builder::default()
    };
    let mcast = Builder {
        dst_mac: [0x01, 0, 0x5E, 0, 0, 1],
        ..Builder::default()
    };
    for b in [&other, &bcast, &mcast] {
        h.rx(&b.udp_len(100, 1, 2));
    }
    assert_eq!(h.stats().rx_filtered, 3);
    h.rx(&ours.udp_len(100, 1, 2));
    assert_eq!(h.stats().rx_frames, 1);
    h.rctl(RCTL_UPE | RCTL_BAM | RCTL_MPE, 0);
    for b in [&other, &bcast, &mcast] {
        h.rx(&b.udp_len(100, 1, 2));
    }
    assert_eq!(h.stats().rx_frames, 4);
    // A second station address in RA[1].
    h.rctl(0, RCTL_UPE);
    h.nic.write32(RAL0 + 8, u32::from_le_bytes([0x02, 9, 9, 9]));
    h.nic
        .write32(RAH0 + 8, u32::from_le_bytes([9, 9, 0, 0]) | RAH_AV);
    h.rx(&other.udp_len(100, 1, 2));
    assert_eq!(h.stats().rx_frames, 5);

    h.rctl(0, RCTL_EN);
    h.rx(&ours.udp_len(100, 1, 2));
    assert_eq!(h.stats().rx_disabled, 1);
    h.rctl(RCTL_EN, 0);
    h.nic.write32(rx_queue_base(0) + Q_DCTL, 0);
    assert_eq!(
        h.nic.read32(rx_queue_base(0) + Q_DCTL) & DCTL_QUEUE_ENABLE,
        0
    );
    h.rx(&ours.udp_len(100, 1, 2));
    assert_eq!(h.stats().rx_disabled, 2);
    assert_eq!(h.stats().rx_frames, 5);
}

#[test]
fn checksum_status_good_and_corrupted() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(12);
    let b = Builder::default();
    let good_udp = b.udp_len(200, 1, 2);
    let mut bad_ip = good_udp.clone();
    bad_ip[14 + 8] ^= 0x10; // TTL: IP checksum now wrong (UDP pseudo header unaffected)
    let mut bad_udp = good_udp.clone();
    bad_udp[150] ^= 0xFF;
    let tcp = b.tcp(&Tcp::default(), &[3; 100]);
    let mut bad_tcp = tcp.clone();
    *bad_tcp.last_mut().unwrap() ^= 1;
    let udp6 = b.udp6(1, 2, &[9; 100]);
    let mut zero_csum = good_udp.clone();
    zero_csum[40..42].fill(0);
    zero_csum[150] ^= 0xFF; // would be wrong, but UDP checksum 0 means none
    for f in [
        &good_udp, &bad_ip, &bad_udp, &tcp, &bad_tcp, &udp6, &zero_csum,
    ] {
        h.rx(f);
    }
    let st = |h: &Harness, i| {
        let s = h.wb(i).status;
        (s.ipcs(), s.ipe(), s.l4cs(), s.udpcs(), s.tcpe())
    };
    assert_eq!(st(&h, 0), (true, false, true, true, false));
    assert_eq!(st(&h, 1), (true, true, true, true, false));
    assert_eq!(st(&h, 2), (true, false, true, true, true));
    assert_eq!(st(&h, 3), (true, false, true, false, false));
    assert_eq!(st(&h, 4), (true, false, true, false, true));
    assert_eq!(st(&h, 5), (false, false, true, true, false));
    assert_eq!(h.wb(5).info.pkt_type(), PKT_TYPE_IPV6 | PKT_TYPE_UDP);
    assert!(!h.wb(5).status.ipidv());
    assert_eq!(st(&h, 6), (true, false, false, false, false));

    // Offloads off: no status bits. PCSD: no IP id either.
    h.nic.write32(RXCSUM, RXCSUM_PCSD);
    h.rx(&bad_udp);
    assert_eq!(st(&h, 7), (false, false, false, false, false));
    assert!(!h.wb(7).status.ipidv());
    assert_eq!(h.wb(7).rss, 0);
}

#[test]
fn dma_fault_on_unmapped_buffer_writes_nothing() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    // A payload address just past the end of the packet region: unmapped.
    let end = h.pkts.iova() + h.pkts.len() as u64;
    h.post_with(1, |_, _| (end - 100, 0));
    let before = h.desc(&h.ring, 0);
    let f = Builder::default().udp_len(242, 1, 2);
    assert_eq!(h.rx(&f), 1);
    let s = h.stats();
    assert_eq!((s.dma_faults, s.rx_frames), (1, 0));
    assert_eq!(h.desc(&h.ring, 0), before, "descriptor untouched");
    assert_eq!(h.rdh(), 0);
    assert_eq!(
        h.read(end - 100, 100),
        vec![SENTINEL; 100],
        "nothing written into the mapped part"
    );

    // An unmapped ring faults too, and nothing panics.
    h.nic.write32(rx_queue_base(0) + Q_BAL, 0x10);
    h.nic.write32(rx_queue_base(0) + Q_BAH, 0);
    h.rx(&f);
    assert_eq!(h.stats().dma_faults, 2);
}

#[test]
fn unmap_revokes_device_access() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(2);
    let maps = h.nic.dma_mappings();
    let pkts_iova = h.pkts.iova();
    // Swap the packet region out: dropping it unmaps it.
    let space = h._space.clone();
    let old = std::mem::replace(&mut h.pkts, space.alloc(4096).unwrap());
    drop(old);
    assert_eq!(h.nic.dma_mappings(), maps);
    assert_eq!(
        h.nic.unmap(pkts_iova, 4096),
        Err(driver::DmaError::NotMapped(pkts_iova))
    );
    h.rx(&Builder::default().udp_len(100, 1, 2));
    assert_eq!(h.stats().dma_faults, 1);
}

#[test]
fn link_down_after_reset_until_autoneg_restart() {
    let mut h = Harness::new(SimConfig {
        link_up_delay: Duration::from_millis(30),
        ..cfg()
    });
    h.nic.write32(CTRL, CTRL_RST);
    assert_eq!(h.nic.read32(STATUS) & STATUS_LU, 0);
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(4);
    let f = Builder::default().udp_len(100, 1, 2);
    for _ in 0..3 {
        assert_eq!(h.rx(&f), 1);
    }
    assert_eq!(h.stats().rx_link_down, 3);
    assert_eq!(h.stats().rx_frames, 0);
    assert!(!h.wb(0).status.dd());

    let bmcr = (BMCR_AN_ENABLE | BMCR_AN_RESTART | BMCR_FULL_DUPLEX | BMCR_SPEED_1000) as u32;
    h.nic.write32(
        MDIC,
        bmcr | PHY_BMCR << MDIC_REG_SHIFT | PHY_ADDR << MDIC_PHY_SHIFT | MDIC_OP_WRITE,
    );
    assert_eq!(h.nic.read32(MDIC) & (MDIC_READY | MDIC_ERROR), MDIC_READY);
    // Still negotiating: dropped.
    h.rx(&f);
    assert_eq!(h.stats().rx_link_down, 4);
    let start = std::time::Instant::now();
    while h.nic.read32(STATUS) & STATUS_LU == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "link never came up"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    h.rx(&f);
    assert_eq!(h.stats().rx_frames, 1);
    assert!(h.wb(0).status.dd());

    // Unplugging the cable drops frames again.
    h.nic.set_carrier(false);
    h.rx(&f);
    assert_eq!(h.stats().rx_link_down, 5);
}

#[test]
fn missed_packets_without_flow_control() {
    let mut h = Harness::new(SimConfig {
        flow_control: false,
        ..cfg()
    });
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(1);
    let f = Builder::default().udp_len(100, 1, 2);
    for _ in 0..3 {
        h.wire.push(f.clone());
    }
    assert_eq!(h.engine.step(64), 3);
    let s = h.stats();
    assert_eq!((s.rx_frames, s.rx_missed), (1, 2));
    assert_eq!(h.nic.read32(MPC), 2);
    assert_eq!(h.nic.read32(MPC), 0, "clear on read");
    assert_eq!(h.wire.pending(), 0);
    // A frame needing two 1 KiB buffers does not fit one free descriptor.
    h.nic.write32(rx_queue_base(0) + Q_SRRCTL, ONEBUF | 1);
    h.post(1);
    h.rx(&Builder::default().udp_len(1100, 1, 2));
    assert_eq!(h.stats().rx_missed, 3);
}

#[test]
fn flow_control_holds_frames_until_descriptors_arrive() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(1);
    let b = Builder::default();
    let frames: Vec<Vec<u8>> = (0..3).map(|i| b.udp_len(100 + i, 1, 2)).collect();
    for f in &frames {
        h.wire.push(f.clone());
    }
    assert_eq!(h.engine.step(64), 1);
    assert!(h.engine.has_pending());
    assert_eq!(h.wire.pending(), 1);
    assert_eq!(h.engine.step(64), 0);
    let s = h.stats();
    assert_eq!((s.rx_frames, s.rx_missed), (1, 0));
    assert_eq!(h.nic.read32(MPC), 0);
    h.post(4);
    assert_eq!(h.engine.step(64), 2);
    assert_eq!(h.stats().rx_frames, 3);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(h.pkt(i as u32, f.len()), *f, "frame {i} in order");
    }
}

#[test]
fn transmit_to_wire_and_mac_loopback() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(4);
    h.tx_setup();
    let f = Builder::default().udp_len(300, 5, 6);
    let used = h.tx(&f, 128);
    assert_eq!(used.len(), 3);
    assert_eq!(h.engine.step(64), 1);
    assert_eq!(h.wire.take_sent(), vec![f.clone()]);
    for &i in &used {
        assert_eq!(h.desc(&h.tx_ring, i)[3] & TX_STATUS_DD, TX_STATUS_DD);
    }
    assert_eq!(h.nic.read32(tx_queue_base(0) + Q_HEAD), 3);
    assert_eq!(h.nic.read32(GPTC), 1);
    assert_eq!(h.nic.read32(GOTCL), 304);

    // MAC loopback, with the cable out: the frame comes back on RX.
    h.nic.set_carrier(false);
    h.rctl(RCTL_LBM_MAC, 0);
    let g = Builder::default().tcp(&Tcp::default(), &[1; 500]);
    h.tx(&g, 2048);
    assert_eq!(h.engine.step(64), 1);
    assert!(h.wire.take_sent().is_empty());
    let wb = h.wb(0);
    assert!(wb.status.eop() && wb.status.l4cs() && !wb.status.tcpe());
    assert_eq!(h.pkt(0, g.len()), g);
    let s = h.stats();
    assert_eq!((s.loopback_frames, s.tx_frames, s.rx_frames), (1, 2, 1));

    // Without loopback and with the link down, transmitted frames are lost.
    h.rctl(0, RCTL_LBM_MAC);
    h.tx(&f, 2048);
    h.engine.step(64);
    assert!(h.wire.take_sent().is_empty());
    assert_eq!(h.stats().tx_dropped, 1);
}

#[test]
fn transmit_waits_for_eop_and_faults_skip() {
    let mut h = Harness::new(cfg());
    h.tx_setup();
    let f = Builder::default().udp_len(200, 5, 6);
    // Post the first buffer only (no EOP) by hand.
    {
        let v = h.nic.iommu.view();
        let iova = h.tx_bufs.iova();
        v.translate(iova, 100, Hint::Payload)
            .unwrap()
            .write(0, &f[..100]);
        v.desc(h.tx_ring.iova()).unwrap().write_tx(
            iova,
            TxCmdTypeLen::data(100, false),
            TxOlinfo::with_paylen(200),
        );
    }
    h.tx_tail = 1;
    h.nic.write32(tx_queue_base(0) + Q_TAIL, 1);
    assert_eq!(h.engine.step(8), 0);
    assert!(h.wire.sent().is_empty());
    {
        let v = h.nic.iommu.view();
        let iova = h.tx_bufs.iova_at(SLOT);
        v.translate(iova, 100, Hint::Payload)
            .unwrap()
            .write(0, &f[100..]);
        v.desc(h.tx_ring.iova_at(DESC_LEN)).unwrap().write_tx(
            iova,
            TxCmdTypeLen::data(100, true),
            TxOlinfo::with_paylen(200),
        );
    }
    h.tx_tail = 2;
    h.nic.write32(tx_queue_base(0) + Q_TAIL, 2);
    assert_eq!(h.engine.step(8), 1);
    assert_eq!(h.wire.take_sent(), vec![f.clone()]);

    // A buffer at an unmapped IOVA: fault counted, frame dropped, ring moves on.
    {
        let v = h.nic.iommu.view();
        v.desc(h.tx_ring.iova_at(2 * DESC_LEN)).unwrap().write_tx(
            0x10,
            TxCmdTypeLen::data(100, true),
            TxOlinfo::with_paylen(100),
        );
    }
    h.nic.write32(tx_queue_base(0) + Q_TAIL, 3);
    h.engine.step(8);
    let s = h.stats();
    assert_eq!((s.dma_faults, s.tx_dropped, s.tx_frames), (1, 1, 1));
    assert_eq!(h.nic.read32(tx_queue_base(0) + Q_HEAD), 3);
    assert_eq!(h.desc(&h.tx_ring, 2)[3] & TX_STATUS_DD, TX_STATUS_DD);
}

#[test]
fn wb_hook_forges_write_backs() {
    let mut h = Harness::new(cfg());
    h.rx_setup(ONEBUF, 0, 2048);
    h.post(2);
    h.engine
        .set_rx_wb_hook(Some(Box::new(|q, wb: &mut RxWriteBack| {
            assert_eq!(q, 0);
            wb.status.set_eop(false);
            wb.len.set_pkt_len(9999);
        })));
    h.rx(&Builder::default().udp_len(100, 1, 2));
    let wb = h.wb(0);
    assert!(wb.status.dd() && !wb.status.eop());
    assert_eq!(wb.len.pkt_len(), 9999);
    h.engine.set_rx_wb_hook(None);
    h.rx(&Builder::default().udp_len(100, 1, 2));
    assert!(h.wb(1).status.eop());
}

#[test]
fn garbage_from_the_driver_never_panics() {
    let mut h = Harness::new(SimConfig {
        flow_control: false,
        ..cfg()
    });
    h.rx_setup(ALWAYS, 128, 1024);
    h.tx_setup();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ring = h.ring.iova();
    let base = h.pkts.iova();
    for round in 0..300 {
        {
            let v = h.nic.iommu.view();
            for i in 0..NDESC {
                let r = rnd();
                // Mix valid, null, unaligned and wild addresses.
                let p = match r % 4 {
                    0 => 0,
                    1 => base + (r >> 8) % (h.pkts.len() as u64),
                    2 => r,
                    _ => base + (i as u64) * SLOT as u64,
                };
                v.desc(ring + i as u64 * 16).unwrap().set_raw([
                    p as u32,
                    (p >> 32) as u32,
                    rnd() as u32,
                    rnd() as u32,
                ]);
                v.desc(h.tx_ring.iova() + i as u64 * 16).unwrap().set_raw([
                    p as u32,
                    (p >> 32) as u32,
                    rnd() as u32,
                    rnd() as u32,
                ]);
            }
        }
        let n = &h.nic;
        let r = rnd();
        n.write32(rx_queue_base(0) + Q_TAIL, (r & 0x1F) as u32);
        n.write32(rx_queue_base(0) + Q_HEAD, ((r >> 5) & 0x1F) as u32);
        n.write32(tx_queue_base(0) + Q_TAIL, ((r >> 10) & 0x1F) as u32);
        n.write32(tx_queue_base(0) + Q_HEAD, ((r >> 15) & 0x1F) as u32);
        if round % 7 == 0 {
            n.write32(rx_queue_base(0) + Q_LEN, (r >> 20) as u32);
            n.write32(
                rx_queue_base(0) + Q_SRRCTL,
                (r >> 24) as u32 | ((r >> 40) as u32 & 0x0E00_0F7F),
            );
        }
        if round % 11 == 0 {
            n.write32(RCTL, (r >> 32) as u32 | RCTL_EN);
            n.write32(RLPML, (r >> 48) as u32);
        }
        let len = 14 + (rnd() % 9300) as usize;
        let mut f = Builder::default().udp_len(len.max(60), 1, 2);
        f.truncate(len);
        for b in f.iter_mut().skip(12).take(40) {
            if rnd() % 8 == 0 {
                *b = rnd() as u8;
            }
        }
        h.wire.push(f);
        h.engine.step(4);
    }
    // Something happened, and the device is still usable after a reset.
    let s = h.stats();
    assert!(s.dma_faults + s.rx_frames + s.rx_missed + s.rx_oversize + s.rx_filtered > 0);
    h.nic.write32(CTRL, CTRL_RST);
    assert_eq!(
        h.nic.read32(rx_queue_base(0) + Q_DCTL) & DCTL_QUEUE_ENABLE,
        0
    );
}

#[test]
fn threaded_engine_feeds_a_polling_driver() {
    let gen = Generator::new(GenConfig {
        count: Some(2000),
        flows: 4,
        ..GenConfig::default()
    })
    .unwrap();
    let expected = gen.expected(2000);
    let (nic, engine) = SimNic::new(cfg(), Box::new(gen));
    let space = DmaSpace::new(nic.clone() as Arc<dyn DmaMapper>);
    let ring = space.alloc(NDESC as usize * DESC_LEN).unwrap();
    let pkts = space.alloc(NDESC as usize * 2048).unwrap();
    let b = rx_queue_base(0);
    nic.write32(b + Q_BAL, ring.iova() as u32);
    nic.write32(b + Q_BAH, (ring.iova() >> 32) as u32);
    nic.write32(b + Q_LEN, NDESC * DESC_LEN as u32);
    nic.write32(b + Q_SRRCTL, ONEBUF | 2);
    nic.write32(b + Q_DCTL, DCTL_QUEUE_ENABLE);
    nic.write32(RCTL, RCTL_EN | RCTL_SECRC | RCTL_BAM);
    let post = |i: u32| {
        let v = nic.iommu.view();
        v.desc(ring.iova_at(i as usize * DESC_LEN))
            .unwrap()
            .write_rx_read(pkts.iova_at(i as usize * 2048), 0);
    };
    for i in 0..NDESC - 1 {
        post(i);
    }
    let mut tail = NDESC - 1;
    nic.write32(b + Q_TAIL, tail);
    let thread = engine.spawn().expect("spawn");
    let mut got = 0usize;
    let mut next = 0u32;
    let start = std::time::Instant::now();
    while got < expected.len() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stalled after {got} frames"
        );
        let (wb, data) = {
            let v = nic.iommu.view();
            let slot = v.desc(ring.iova_at(next as usize * DESC_LEN)).unwrap();
            let st = slot.status_acquire();
            if st & 1 == 0 {
                drop(v);
                std::thread::yield_now();
                continue;
            }
            let wb = slot.read_rx_wb(st);
            let mut data = Vec::new();
            v.translate(
                pkts.iova_at(next as usize * 2048),
                wb.len.pkt_len() as usize,
                Hint::Payload,
            )
            .unwrap()
            .read_append(&mut data);
            (wb, data)
        };
        assert!(wb.status.eop());
        assert_eq!(data, expected[got], "frame {got}");
        got += 1;
        post(tail);
        tail = (tail + 1) % NDESC;
        nic.write32(b + Q_TAIL, tail);
        next = (next + 1) % NDESC;
    }
    let engine = thread.stop();
    assert_eq!(engine.nic().stats().rx_frames, 2000);
    assert_eq!(engine.nic().stats().rx_missed, 0);
}

#[test]
fn gro_write_backs_and_counters() {
    let mut h = Harness::new(SimConfig { gro: 16, ..cfg() });
    h.rx_setup(SPLIT, 256, 1024);
    h.post(15);
    let seg = |seq: u32, id: u16| {
        Builder {
            ip_id: id,
            ..Builder::default()
        }
        .tcp(
            &Tcp {
                seq,
                ..Tcp::default()
            },
            &frames::payload_pattern(1000, seq as u8),
        )
    };
    let mut bad = seg(4000, 5);
    *bad.last_mut().unwrap() ^= 0xFF;
    for f in [
        seg(0, 7),
        seg(1000, 8),
        seg(2000, 9),
        seg(3000, 10),
        bad,
        seg(5000, 11),
    ] {
        h.wire.push(f);
    }
    assert_eq!(h.engine.step(64), 6);
    // One packet of 4 segments in descriptors 0..=3: header 54 B, then
    // 4000 B over 1 KiB buffers; segments start at frame offsets 54, 1054,
    // 2054 and 3054, so RSCCNT is 2, 1, 1, 0.
    let wbs: Vec<RxWriteBack> = (0..6).map(|i| h.wb(i)).collect();
    assert_eq!(
        wbs.iter().map(|w| w.info.rsc_cnt()).collect::<Vec<_>>(),
        [2, 1, 1, 0, 0, 0]
    );
    assert_eq!(
        wbs.iter().map(|w| w.status.eop()).collect::<Vec<_>>(),
        [false, false, false, true, true, true]
    );
    assert_eq!(hdr_info(&wbs[0]), (54, true, 1024));
    assert_eq!(wbs[3].len.pkt_len(), 4000 - 3 * 1024);
    let eop = wbs[3];
    assert_eq!(eop.info.pkt_type(), PKT_TYPE_IPV4 | PKT_TYPE_TCP);
    assert!(eop.status.ipcs() && eop.status.l4cs() && !eop.status.ipe() && !eop.status.tcpe());
    assert!(eop.status.ipidv());
    assert_eq!(eop.rss, 7, "the first segment's IP id");
    let hdr = h.hdr(0, 54);
    assert_eq!(u16::from_be_bytes([hdr[16], hdr[17]]), 20 + 20 + 4000);
    // The segment with a bad checksum is not coalesced: alone, with TCPE.
    assert!(wbs[4].status.l4cs() && wbs[4].status.tcpe());
    // The next one starts a run of its own.
    assert!(wbs[5].status.l4cs() && !wbs[5].status.tcpe());
    let s = h.stats();
    assert_eq!(
        (s.rx_frames, s.gro_packets, s.gro_segments, s.rx_missed),
        (3, 1, 4, 0)
    );
    // GPRC/GORC count wire segments.
    assert_eq!(h.nic.read32(GPRC), 6);
    assert_eq!(h.nic.read32(GORCL), 6 * (1054 + 4));
}
