//! The engine driven by hand-built frames: a test page pool supplies the
//! buffers, a `Client` plays the peer's side of each connection.

use super::wire::{self, Headers, Out};
use super::*;
use driver::dma::{DmaSpace, NoIommu};
use driver::{BufPool, Csum, OwnedPacket, Seg};
use packet::tcp::flags as F;
use pipeline::{PagePool, PagePoolConfig};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Instant;

pub(super) const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub(super) const OUR_IP: [u8; 4] = [10, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const PEER_IP: [u8; 4] = [10, 0, 0, 2];
const PORT: u16 = 9000;

/// 4 KiB buffers without headroom: a page starts on a page boundary.
pub(super) fn pool(buffers: usize) -> PagePool {
    let space = DmaSpace::new(Arc::new(NoIommu));
    PagePool::new(
        &space,
        PagePoolConfig {
            buffers,
            buf_len: 4096,
            headroom: 0,
            ..PagePoolConfig::default()
        },
    )
    .unwrap()
}

/// How a frame is laid out in buffers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// Headers in a header slot (split) or at the start of the first page.
    pub split: bool,
    /// Payload bytes per page.
    pub seg: usize,
    /// The device's checksum verdict (`None`: software checks).
    pub csum: Csum,
    /// With `split`: bytes in the header slot other than the headers'
    /// length (split `always`: the whole small frame; HBO: the first `n`
    /// bytes, which may end inside the headers or inside the payload).
    pub hdr_bytes: Option<usize>,
}

pub(super) const SPLIT: Layout = Layout {
    split: true,
    seg: 4096,
    csum: Csum::Good,
    hdr_bytes: None,
};

/// Puts `frame` (headers of `hdr_len` bytes, then payload) into buffers
/// from `pool` the way the RX ring hands it out.
pub(super) fn packet(pool: &mut PagePool, frame: &[u8], hdr_len: usize, l: Layout) -> OwnedPacket {
    let mut pkt = OwnedPacket {
        hdr: None,
        hdr_len: 0,
        len: frame.len() as u32,
        segs: Vec::new(),
        pkt_type: 0,
        ip_csum: l.csum,
        l4_csum: l.csum,
        rss: 0,
        rss_type: 0,
    };
    let mut rest = frame;
    if l.split {
        let n = l.hdr_bytes.unwrap_or(hdr_len).min(frame.len());
        let mut h = pool.alloc().expect("test pool");
        h.as_mut_slice(n).copy_from_slice(&frame[..n]);
        pkt.hdr = Some(h);
        pkt.hdr_len = n as u16;
        rest = &frame[n..];
    }
    while !rest.is_empty() {
        let first = pkt.segs.is_empty() && !l.split;
        let n = if first {
            (hdr_len + l.seg).min(4096)
        } else {
            l.seg.min(4096)
        }
        .min(rest.len());
        let mut b = pool.alloc().expect("test pool");
        b.as_mut_slice(n).copy_from_slice(&rest[..n]);
        pkt.segs.push(Seg {
            buf: b,
            len: n as u16,
        });
        rest = &rest[n..];
    }
    pkt
}

/// Gives every buffer left in `pkt` back to `pool`.
pub(super) fn recycle(pool: &mut PagePool, pkt: &mut OwnedPacket) {
    if let Some(h) = pkt.hdr.take() {
        pool.recycle(h);
    }
    for s in pkt.segs.drain(..) {
        pool.recycle(s.buf);
    }
}

/// The peer's side of one connection.
pub(super) struct Client {
    pub port: u16,
    pub isn: u32,
    /// Our ISN, learnt from the SYN-ACK.
    pub our_isn: u32,
    pub ts: bool,
    /// The window the client advertises (scaled by 2^7 after the SYN).
    pub window: u16,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client {
            port,
            isn: 1000u32.wrapping_mul(port as u32) ^ 0xfff0_0000,
            our_isn: 0,
            ts: true,
            window: 0xFFFF,
        }
    }

    /// A segment from the client; data offset `off` is relative to the
    /// first byte of the stream.
    pub fn frame(&self, flags: u8, off: u32, ack_off: u32, payload: &[u8]) -> (Vec<u8>, usize) {
        let syn = flags & F::SYN != 0;
        let o = Out {
            dst_mac: OUR_MAC,
            dst_ip: OUR_IP,
            src_port: self.port,
            dst_port: PORT,
            seq: if syn {
                self.isn
            } else {
                self.isn.wrapping_add(1).wrapping_add(off)
            },
            ack: self.our_isn.wrapping_add(1).wrapping_add(ack_off),
            flags,
            window: self.window,
            syn: syn.then_some((1460, Some(7), true)),
            ts: self.ts.then_some((77, 0)),
            sack: &[],
            payload,
        };
        let mut f = Vec::new();
        wire::build(&mut f, PEER_MAC, PEER_IP, 1, &o);
        let hl = f.len() - payload.len();
        (f, hl)
    }
}

pub(super) struct Harness {
    pub pool: PagePool,
    pub zc: ZcStack,
    pub now: Instant,
    pub layout: Layout,
}

impl Harness {
    pub fn new(cfg: ZcConfig) -> Harness {
        Harness {
            pool: pool(1024),
            zc: ZcStack::new(cfg).unwrap(),
            now: Instant::now(),
            layout: SPLIT,
        }
    }

    pub fn cfg() -> ZcConfig {
        ZcConfig {
            mac: OUR_MAC,
            ip: OUR_IP,
            listen: vec![PORT],
            // The harness feeds frames one at a time and polls when a test
            // says so: ACKs as each segment asks.
            ack_per_round: false,
            ..ZcConfig::default()
        }
    }

    /// Feeds a frame; returns how many payload pages the engine left.
    pub fn feed(&mut self, (f, hl): (Vec<u8>, usize)) -> usize {
        let mut pkt = packet(&mut self.pool, &f, hl, self.layout);
        self.zc.rx(&mut pkt, self.now);
        let left = pkt.segs.len();
        recycle(&mut self.pool, &mut pkt);
        left
    }

    /// The frames the engine sent, parsed from the client's side.
    pub fn sent(&mut self) -> Vec<Headers> {
        let mut out = Vec::new();
        self.zc.transmit(|f| {
            out.push(wire::parse(f, f.len(), PEER_MAC, PEER_IP).expect("a frame we can read"));
            true
        });
        out
    }

    pub fn events(&mut self) -> Vec<ZcEvent> {
        std::iter::from_fn(|| self.zc.next_event()).collect()
    }

    /// Handshake of `c`; returns the connection.
    pub fn connect(&mut self, c: &mut Client) -> ConnId {
        self.feed(c.frame(F::SYN, 0, 0, &[]));
        let sa = self.sent();
        assert_eq!(sa.len(), 1);
        assert_eq!(sa[0].flags, F::SYN | F::ACK);
        c.our_isn = sa[0].seq;
        self.feed(c.frame(F::ACK, 0, 0, &[]));
        match self.events().as_slice() {
            [ZcEvent::Accepted { conn, .. }] => *conn,
            e => panic!("no Accepted: {e:?}"),
        }
    }

    /// Payload of the Data events so far, per event (chunks returned).
    pub fn data(&mut self) -> Vec<Vec<u8>> {
        let mut r = self.zc.returner(ReturnMode::Ring, 64);
        let mut out = Vec::new();
        for e in self.events() {
            if let ZcEvent::Data { chunk, .. } = e {
                out.push(chunk.bytes().to_vec());
                r.give_back(chunk);
            }
        }
        drop(r);
        let pool = &mut self.pool;
        self.zc.reclaim(|b| pool.recycle(b));
        out
    }

    /// Everything home: the engine's pages released, the pool audited.
    pub fn finish(mut self) {
        let pool = &mut self.pool;
        self.zc.release_all(|b| pool.recycle(b));
        assert_eq!(self.zc.pages_out(), 0);
        assert_eq!(self.pool.audit().lent, 0, "a page leaked");
        let s = *self.zc.stats();
        assert_eq!(
            s.rx_frames,
            s.tcp_segments + s.arp_frames + s.icmp_echo_replies + s.drops(),
            "{s:#?}"
        );
    }
}

fn pattern(off: usize, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    crate::pattern::fill(off as u64, &mut v);
    v
}

#[test]
fn handshake_with_options() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    h.feed(c.frame(F::SYN, 0, 0, &[]));
    let sa = h.sent();
    assert_eq!(sa.len(), 1);
    let s = &sa[0];
    assert_eq!(s.flags, F::SYN | F::ACK);
    assert_eq!(s.ack, c.isn.wrapping_add(1));
    assert_eq!(s.opts.mss, Some(1460));
    assert_eq!(s.opts.wscale, Some(5), "1 MiB needs a shift of 5");
    assert!(s.opts.sack_perm);
    assert_eq!(s.opts.ts.map(|t| t.1), Some(77), "TSval echoed");
    assert_eq!(s.window, 0xFFFF, "the SYN-ACK window is not scaled");
    assert!(h.events().is_empty(), "not accepted before the ACK");
    c.our_isn = s.seq;
    h.feed(c.frame(F::ACK, 0, 0, &[]));
    let ev = h.events();
    assert!(matches!(
        ev.as_slice(),
        [ZcEvent::Accepted {
            local_port: PORT,
            remote: (PEER_IP, 40000),
            ..
        }]
    ));
    assert_eq!(h.zc.open_connections(), 1);
    assert_eq!(h.zc.stats().conns_accepted, 1);
    // Another connection gets another ISN.
    let mut c2 = Client::new(40001);
    h.connect(&mut c2);
    assert_ne!(c.our_isn, c2.our_isn);
    h.finish();
}

/// `ack_per_round`: a round of in-order segments gets one ACK, at the end
/// of the round (`poll`), covering all of them; out-of-order data is still
/// acknowledged at once, and a round with a single segment waits for the
/// delayed-ACK timer as before.
#[test]
fn in_order_data_of_one_round_gets_one_ack_at_its_end() {
    let mut h = Harness::new(ZcConfig {
        ack_per_round: true,
        ..Harness::cfg()
    });
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let d = pattern(0, 20 * 1460);
    for k in 0..8 {
        h.feed(c.frame(
            F::ACK,
            k * 1460,
            0,
            &d[k as usize * 1460..(k as usize + 1) * 1460],
        ));
    }
    assert!(h.sent().is_empty(), "nothing before the round ends");
    h.zc.poll(h.now);
    let a = h.sent();
    assert_eq!(a.len(), 1, "one ACK for the round");
    assert_eq!(a[0].ack, c.isn.wrapping_add(1 + 8 * 1460));
    h.zc.poll(h.now);
    assert!(h.sent().is_empty(), "owed once");
    // Out of order (segment 9 before 8): at once, with a SACK block.
    h.feed(c.frame(F::ACK, 9 * 1460, 0, &d[9 * 1460..10 * 1460]));
    let a = h.sent();
    assert_eq!(a.len(), 1, "out-of-order data is acknowledged at once");
    assert_eq!(a[0].ack, c.isn.wrapping_add(1 + 8 * 1460));
    // The gap filled: at once too; the round then owes nothing.
    h.feed(c.frame(F::ACK, 8 * 1460, 0, &d[8 * 1460..9 * 1460]));
    assert_eq!(h.sent().len(), 1);
    h.zc.poll(h.now);
    assert!(h.sent().is_empty());
    // One segment in a round: the delayed-ACK timer.
    h.feed(c.frame(F::ACK, 10 * 1460, 0, &d[10 * 1460..11 * 1460]));
    h.zc.poll(h.now);
    assert!(h.sent().is_empty(), "one segment waits");
    h.now += Duration::from_millis(1);
    h.zc.poll(h.now);
    assert_eq!(h.sent().len(), 1);
    let mut r = h.zc.returner(ReturnMode::Locked, 512);
    for e in h.events() {
        if let ZcEvent::Data { chunk, .. } = e {
            r.give_back(chunk);
        }
    }
    drop(r);
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    h.finish();
}

#[test]
fn in_order_data_is_delivered_in_place_with_delayed_acks() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    let d = pattern(0, 3 * 1460);
    // One full segment: the ACK waits.
    assert_eq!(h.feed(c.frame(F::ACK, 0, 0, &d[..1460])), 0, "page kept");
    assert!(h.sent().is_empty(), "delayed");
    // The second full segment is acknowledged at once.
    h.feed(c.frame(F::ACK, 1460, 0, &d[1460..2920]));
    let a = h.sent();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].ack, c.isn.wrapping_add(1 + 2920));
    assert_eq!(a[0].opts.ts.map(|t| t.1), Some(77));
    // A third waits for the timer.
    h.feed(c.frame(F::ACK | F::PSH, 2920, 0, &d[2920..]));
    assert!(h.sent().is_empty());
    h.now += Duration::from_millis(1);
    h.zc.poll(h.now);
    let a = h.sent();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].ack, c.isn.wrapping_add(1 + 4380));
    assert_eq!(h.zc.stats().delayed_acks, 1);
    let mut events = h.events();
    let mut got = Vec::new();
    let mut r = h.zc.returner(ReturnMode::Locked, 512);
    for e in events.drain(..) {
        let ZcEvent::Data { conn: c2, chunk } = e else {
            panic!("{e:?}")
        };
        assert_eq!(c2, conn);
        assert_eq!(chunk.conn(), conn);
        assert!(!chunk.is_copy());
        assert!(chunk.page_aligned(), "payload at the start of a page");
        got.extend_from_slice(chunk.bytes());
        r.give_back(chunk);
    }
    assert_eq!(got, d);
    assert_eq!(h.zc.stats().chunks, 3);
    assert_eq!(h.zc.stats().page_aligned_chunks, 3);
    assert_eq!(r.pending(), 3);
    r.flush();
    assert_eq!(r.stats().locks, 1);
    assert_eq!(r.stats().pages, 3);
    assert_eq!(r.stats().bytes, 4380);
    h.finish();
}

#[test]
fn unsplit_and_multi_page_frames_become_several_chunks() {
    let mut cfg = Harness::cfg();
    cfg.mtu = 9000;
    let mut h = Harness::new(cfg);
    h.layout = Layout {
        split: false,
        seg: 3000,
        csum: Csum::None,
        hdr_bytes: None,
    };
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let d = pattern(0, 8000);
    assert_eq!(h.feed(c.frame(F::ACK, 0, 0, &d)), 0);
    let data = h.data();
    assert_eq!(data.len(), 3, "a jumbo frame over three pages");
    assert_eq!(data.concat(), d);
    assert_eq!(
        h.zc.stats().page_aligned_chunks,
        2,
        "the first starts after the headers"
    );
    h.finish();
}

#[test]
fn payload_in_the_header_slot_is_copied_and_headers_across_buffers_are_read() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    c.ts = false;
    // Split `always`: a pure ACK padded to 60 bytes, all in the header
    // slot (54 bytes of headers, 6 of padding).
    h.feed(c.frame(F::SYN, 0, 0, &[]));
    c.our_isn = h.sent()[0].seq;
    h.layout.hdr_bytes = Some(60);
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[]);
    f.resize(60, 0);
    h.feed((f, hl));
    assert!(matches!(h.events().as_slice(), [ZcEvent::Accepted { .. }]));
    let d = pattern(0, 3000);
    // A small segment whole in the slot; a large one with its first bytes
    // there (HBO: the first 256 bytes), the rest in pages.
    h.layout.hdr_bytes = Some(54 + 100);
    h.feed(c.frame(F::ACK, 0, 0, &d[..100]));
    h.layout.hdr_bytes = Some(256);
    assert_eq!(
        h.feed(c.frame(F::ACK, 100, 0, &d[100..2000])),
        0,
        "the pages kept"
    );
    // Headers ending in the first page (a slot shorter than them).
    h.layout.hdr_bytes = Some(30);
    h.layout.csum = Csum::None;
    h.feed(c.frame(F::ACK, 2000, 0, &d[2000..]));
    assert_eq!(h.zc.stats().malformed, 0);
    assert_eq!(h.zc.stats().bad_checksum, 0);
    let data = h.data();
    assert_eq!(data.concat(), d);
    assert_eq!(
        h.zc.stats().copy_fallback_bytes,
        100 + (256 - 54) as u64,
        "what the header slot held"
    );
    h.finish();
}

#[test]
fn out_of_order_segments_are_queued_and_sacked() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let d = pattern(0, 4000);
    let seq = |o: u32| c.isn.wrapping_add(1 + o);
    h.feed(c.frame(F::ACK, 2000, 0, &d[2000..3000]));
    let a = h.sent();
    assert_eq!(a.len(), 1, "out of order: ACK at once");
    assert_eq!(a[0].ack, seq(0));
    assert_eq!(
        &a[0].opts.sack[..a[0].opts.sack_len],
        &[(seq(2000), seq(3000))]
    );
    h.feed(c.frame(F::ACK, 3500, 0, &d[3500..4000]));
    let a = h.sent();
    assert_eq!(
        &a[0].opts.sack[..a[0].opts.sack_len],
        &[(seq(3500), seq(4000)), (seq(2000), seq(3000))],
        "the latest block first"
    );
    assert!(h.data().is_empty());
    assert_eq!(h.zc.stats().ooo_segments, 2);
    // Fill the first hole: 0..3000 delivered, ACK at once.
    h.feed(c.frame(F::ACK, 0, 0, &d[..2000]));
    let a = h.sent();
    assert_eq!(a[0].ack, seq(3000));
    assert_eq!(
        &a[0].opts.sack[..a[0].opts.sack_len],
        &[(seq(3500), seq(4000))]
    );
    h.feed(c.frame(F::ACK, 3000, 0, &d[3000..3500]));
    assert_eq!(h.sent()[0].ack, seq(4000));
    assert_eq!(h.data().concat(), d);
    assert_eq!(h.zc.stats().ooo_gap_filled, 2);
    assert_eq!(h.zc.stats().sack_blocks_sent, 4);
    h.finish();
}

#[test]
fn sack_blocks_are_capped_and_merged() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let seq = |o: u32| c.isn.wrapping_add(1 + o);
    // Five islands, then one joining the second and third.
    for o in [1000u32, 3000, 5000, 7000, 9000] {
        h.feed(c.frame(F::ACK, o, 0, &pattern(o as usize, 500)));
    }
    let a = h.sent();
    let last = a.last().unwrap();
    assert_eq!(last.opts.sack_len, 3, "three blocks beside timestamps");
    assert_eq!(
        last.opts.sack[0],
        (seq(9000), seq(9500)),
        "the latest first"
    );
    assert_eq!(last.opts.sack[1], (seq(7000), seq(7500)));
    h.feed(c.frame(F::ACK, 3500, 0, &pattern(3500, 1500)));
    let a = h.sent();
    assert_eq!(a[0].opts.sack[0], (seq(3000), seq(5500)), "merged runs");
    assert_eq!(a[0].opts.sack[1], (seq(9000), seq(9500)));
    // Without timestamps, four fit.
    let mut c2 = Client::new(40001);
    c2.ts = false;
    h.connect(&mut c2);
    for o in [1000u32, 3000, 5000, 7000, 9000] {
        h.feed(c2.frame(F::ACK, o, 0, &[1; 10]));
    }
    assert_eq!(h.sent().last().unwrap().opts.sack_len, 4);
    h.finish();
}

#[test]
fn duplicates_and_overlaps_are_trimmed_without_copying() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let d = pattern(0, 3000);
    h.feed(c.frame(F::ACK, 0, 0, &d[..1000]));
    // Overlaps 500 bytes we have: the chunk starts 500 bytes into its page.
    assert_eq!(h.feed(c.frame(F::ACK, 500, 0, &d[500..1500])), 0);
    // Nothing new: the page stays with the caller.
    assert_eq!(h.feed(c.frame(F::ACK, 0, 0, &d[..1000])), 1);
    assert_eq!(h.zc.stats().duplicate_segments, 1);
    assert_eq!(h.zc.stats().retransmitted_segments_seen, 2);
    // Out of order with overlaps on both sides of a queued piece.
    h.feed(c.frame(F::ACK, 2000, 0, &d[2000..2500]));
    h.feed(c.frame(F::ACK, 1800, 0, &d[1800..3000]));
    assert_eq!(
        h.feed(c.frame(F::ACK, 2100, 0, &d[2100..2200])),
        1,
        "inside a queued piece"
    );
    h.feed(c.frame(F::ACK, 1500, 0, &d[1500..1900]));
    let data = h.data();
    assert_eq!(data.concat(), d);
    assert_eq!(data[1].len(), 500, "trimmed by offset");
    assert_eq!(h.zc.stats().copy_fallback_bytes, 0);
    h.finish();
}

#[test]
fn peer_fin_gives_eof_after_the_data_then_close_sends_fin() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    let d = pattern(0, 1000);
    // FIN ahead of the data it follows: held until the hole is filled.
    h.feed(c.frame(F::ACK | F::FIN, 1000, 0, &[]));
    assert!(h.events().is_empty());
    h.feed(c.frame(F::ACK, 0, 0, &d));
    let a = h.sent();
    assert_eq!(
        a.last().unwrap().ack,
        c.isn.wrapping_add(1 + 1000 + 1),
        "FIN acknowledged"
    );
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [ZcEvent::Data { .. }, ZcEvent::Eof { .. }]),
        "{ev:?}"
    );
    drop(ev); // the chunk returns itself
              // A retransmitted FIN is acknowledged again.
    h.feed(c.frame(F::ACK | F::FIN, 1000, 0, &[]));
    assert_eq!(h.sent().len(), 1);
    // Our side: a reply, then FIN.
    assert_eq!(h.zc.send(conn, b"bye"), 3);
    h.zc.close(conn);
    let s = h.sent();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].payload_len, 3);
    assert_eq!(s[1].flags & F::FIN, F::FIN);
    assert_eq!(h.zc.send(conn, b"more"), 0, "nothing after FIN");
    h.feed(c.frame(F::ACK, 1001, 4, &[]));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [ZcEvent::Closed { reset: false, .. }]),
        "{ev:?}"
    );
    assert_eq!(h.zc.open_connections(), 0);
    h.finish();
}

#[test]
fn active_close_retransmits_fin_and_lingers_in_time_wait() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    h.zc.close(conn);
    let f = h.sent();
    assert_eq!(f[0].flags, F::FIN | F::ACK);
    h.now += Duration::from_millis(1100);
    h.zc.poll(h.now);
    let f2 = h.sent();
    assert_eq!(f2.len(), 1, "FIN sent again after the RTO");
    assert_eq!((f2[0].flags, f2[0].seq), (F::FIN | F::ACK, f[0].seq));
    assert_eq!(h.zc.stats().retransmits_sent, 1);
    // The peer acknowledges and closes its side.
    h.feed(c.frame(F::ACK, 0, 1, &[]));
    h.feed(c.frame(F::ACK | F::FIN, 0, 1, &[]));
    assert_eq!(h.sent().len(), 1, "their FIN acknowledged");
    let ev = h.events();
    assert!(matches!(
        ev.as_slice(),
        [ZcEvent::Eof { .. }, ZcEvent::Closed { reset: false, .. }]
    ));
    assert_eq!(h.zc.open_connections(), 1, "TIME-WAIT");
    h.now += Duration::from_secs(2);
    h.zc.poll(h.now);
    assert_eq!(h.zc.open_connections(), 0);
    h.finish();
}

#[test]
fn synack_is_retransmitted_with_backoff_then_given_up() {
    let mut h = Harness::new(Harness::cfg());
    let c = Client::new(40000);
    h.feed(c.frame(F::SYN, 0, 0, &[]));
    assert_eq!(h.sent().len(), 1);
    h.now += Duration::from_millis(999);
    h.zc.poll(h.now);
    assert!(h.sent().is_empty(), "not before the RTO");
    h.now += Duration::from_millis(2);
    h.zc.poll(h.now);
    assert_eq!(h.sent()[0].flags, F::SYN | F::ACK);
    h.now += Duration::from_millis(1500);
    h.zc.poll(h.now);
    assert!(h.sent().is_empty(), "backed off to 2 s");
    for _ in 0..10 {
        h.now += Duration::from_secs(70);
        h.zc.poll(h.now);
    }
    assert_eq!(h.zc.open_connections(), 0);
    assert_eq!(h.zc.stats().conns_timed_out, 1);
    assert!(h.events().is_empty());
    h.finish();
}

#[test]
fn sent_data_is_retransmitted_and_timed() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    assert_eq!(h.zc.send(conn, b"hello"), 5);
    let s = h.sent();
    assert_eq!(s[0].payload_len, 5);
    h.now += Duration::from_millis(1001);
    h.zc.poll(h.now);
    let s2 = h.sent();
    assert_eq!(
        (s2[0].seq, s2[0].payload_len),
        (s[0].seq, 5),
        "go back to the oldest byte"
    );
    h.now += Duration::from_millis(10);
    h.feed(c.frame(F::ACK, 0, 5, &[]));
    h.now += Duration::from_secs(10);
    h.zc.poll(h.now);
    assert!(h.sent().is_empty(), "acknowledged: no more retransmission");
    // Unanswered: given up after the retransmission limit, with a RST.
    h.zc.send(conn, b"x");
    for _ in 0..12 {
        h.now += Duration::from_secs(61);
        h.zc.poll(h.now);
    }
    let s = h.sent();
    assert_eq!(s.last().unwrap().flags & F::RST, F::RST);
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, ZcEvent::Closed { reset: true, .. })));
    assert_eq!(h.zc.stats().conns_timed_out, 1);
    h.finish();
}

#[test]
fn an_ack_for_data_sent_before_a_timeout_is_taken() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    assert_eq!(h.zc.send(conn, &[1; 3000]), 3000);
    assert_eq!(h.sent().len(), 3, "three segments");
    h.now += Duration::from_millis(300);
    h.zc.poll(h.now);
    let again = h.sent();
    assert_eq!(again.len(), 1, "one segment after the timeout");
    // The ACK of the first flight arrives late: everything is acknowledged.
    h.feed(c.frame(F::ACK, 0, 3000, &[]));
    assert_eq!(h.zc.stats().bad_state, 0);
    h.now += Duration::from_secs(5);
    h.zc.poll(h.now);
    assert!(h.sent().is_empty(), "nothing left to send");
    h.zc.close(conn);
    let f = h.sent();
    assert_eq!(
        (f[0].flags, f[0].seq),
        (F::FIN | F::ACK, c.our_isn.wrapping_add(3001))
    );
    h.finish();
}

#[test]
fn a_peer_with_a_closed_window_is_probed_not_given_up() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    c.window = 0;
    h.feed(c.frame(F::ACK, 0, 0, &[])); // the peer's window closes
    assert_eq!(h.zc.send(conn, b"reply"), 5);
    assert!(h.sent().is_empty(), "nothing sent into a zero window");
    // Probes go out on the timer; each is answered with the window still
    // closed. The connection lives on.
    for _ in 0..12 {
        h.now += Duration::from_secs(61);
        h.zc.poll(h.now);
        let probes = h.sent();
        assert_eq!(probes.len(), 1, "one probe per timeout");
        h.feed(c.frame(F::ACK, 0, 0, &[]));
    }
    assert_eq!(h.zc.open_connections(), 1);
    assert_eq!(h.zc.stats().conns_timed_out, 0);
    // The window opens: the data goes and is acknowledged.
    c.window = 100;
    h.feed(c.frame(F::ACK, 0, 5, &[]));
    h.now += Duration::from_secs(61);
    h.zc.poll(h.now);
    assert!(h.sent().is_empty(), "acknowledged: nothing more");
    h.finish();
}

#[test]
fn reset_closes_and_returns_queued_pages() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    h.connect(&mut c);
    h.feed(c.frame(F::ACK, 1000, 0, &pattern(1000, 100)));
    assert_eq!(h.zc.pages_out(), 1);
    // Not at rcv_nxt: a challenge ACK, no reset.
    h.feed(c.frame(F::RST, 10, 0, &[]));
    assert_eq!(h.sent().len(), 2, "OOO ACK, challenge ACK");
    assert_eq!(h.zc.open_connections(), 1);
    h.feed(c.frame(F::RST, 0, 0, &[]));
    let ev = h.events();
    assert!(matches!(
        ev.as_slice(),
        [ZcEvent::Closed { reset: true, .. }]
    ));
    assert_eq!(h.zc.stats().resets_received, 1);
    h.finish();
}

#[test]
fn held_pages_close_the_window_and_returns_reopen_it() {
    let mut cfg = Harness::cfg();
    cfg.rcv_buf = 8 * 1460;
    let mut h = Harness::new(cfg);
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    let d = pattern(0, 8 * 1460);
    for i in 0..8 {
        h.feed(c.frame(
            F::ACK,
            i * 1460,
            0,
            &d[i as usize * 1460..(i as usize + 1) * 1460],
        ));
    }
    let acks = h.sent();
    assert_eq!(
        acks.last().unwrap().window,
        0,
        "everything held: window closed"
    );
    assert_eq!(h.zc.stats().window_closed, 1);
    assert_eq!(h.zc.held_bytes(conn), Some(8 * 1460));
    // Beyond the window: refused, answered.
    assert_eq!(h.feed(c.frame(F::ACK, 8 * 1460, 0, &[1; 100])), 1);
    assert_eq!(h.zc.stats().out_of_window, 1);
    assert_eq!(h.sent().len(), 1);
    let chunks: Vec<ZcChunk> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ZcEvent::Data { chunk, .. } => Some(chunk),
            _ => None,
        })
        .collect();
    assert_eq!(chunks.len(), 8);
    let mut r = h.zc.returner(ReturnMode::Ring, 2);
    for ch in chunks {
        r.give_back(ch);
    }
    assert_eq!(r.stats().locks, 0, "the ring takes no lock");
    assert_eq!(r.stats().calls, 4);
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    assert_eq!(h.zc.held_bytes(conn), Some(0));
    h.zc.poll(h.now);
    let upd = h.sent();
    assert_eq!(upd.len(), 1, "a window update");
    assert_eq!(
        upd[0].window as usize,
        8 * 1460,
        "no scaling for 11680 bytes"
    );
    assert_eq!(h.zc.stats().window_updates, 1);
    assert!(h.zc.stats().held_bytes_max <= 8 * 1460);
    h.finish();
}

#[test]
fn pool_pressure_copies_instead_of_keeping_pages() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    h.connect(&mut c);
    h.zc.set_pool_low(true);
    let d = pattern(0, 3000);
    assert_eq!(
        h.feed(c.frame(F::ACK, 1000, 0, &d[1000..3000])),
        1,
        "page left"
    );
    assert_eq!(h.feed(c.frame(F::ACK, 0, 0, &d[..1000])), 1, "page left");
    assert_eq!(h.zc.pages_out(), 0);
    let ev = h.events();
    for e in &ev {
        if let ZcEvent::Data { chunk, .. } = e {
            assert!(chunk.is_copy());
            assert!(!chunk.page_aligned());
        }
    }
    drop(ev);
    assert_eq!(h.zc.stats().copy_fallback_bytes, 3000);
    h.zc.set_pool_low(false);
    h.feed(c.frame(F::ACK, 3000, 0, &pattern(3000, 10)));
    assert_eq!(h.zc.pages_out(), 1);
    assert_eq!(h.data().concat(), pattern(3000, 10));
    h.finish();
}

#[test]
fn page_bound_falls_back_to_copies() {
    let mut cfg = Harness::cfg();
    cfg.max_pages = 2;
    let mut h = Harness::new(cfg);
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let d = pattern(0, 400);
    for i in 0..4 {
        h.feed(c.frame(
            F::ACK,
            i * 100,
            0,
            &d[i as usize * 100..(i as usize + 1) * 100],
        ));
    }
    assert_eq!(h.zc.pages_out(), 2);
    assert_eq!(h.zc.stats().copy_fallback_bytes, 200);
    assert_eq!(h.data().concat(), d);
    assert_eq!(h.zc.pages_out(), 0);
    h.finish();
}

#[test]
fn hostile_frames_are_counted_drops() {
    let mut h = Harness::new(Harness::cfg());
    h.layout.csum = Csum::None;
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let before = *h.zc.stats();
    // A flipped payload bit.
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[1, 2, 3, 4]);
    *f.last_mut().unwrap() ^= 1;
    assert_eq!(h.feed((f, hl)), 1);
    // A flipped IP header bit (TTL).
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[1, 2, 3, 4]);
    f[22] ^= 1;
    h.feed((f, hl));
    assert_eq!(h.zc.stats().bad_checksum, 2);
    // Truncated: the IP length says more than the frame has.
    let (mut f, _) = c.frame(F::ACK, 0, 0, &[1, 2, 3, 4]);
    f.truncate(f.len() - 2);
    let n = f.len();
    h.feed((f, n.min(54)));
    let (f, _) = c.frame(F::ACK, 0, 0, &[]);
    h.feed((f[..40].to_vec(), 40));
    assert_eq!(h.zc.stats().malformed, 2);
    // An option with length 0.
    h.layout.csum = Csum::Good;
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[]);
    f[54] = 2;
    f[55] = 0;
    h.feed((f, hl));
    assert_eq!(h.zc.stats().bad_options, 1);
    // Not ours.
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[]);
    f[0] = 0x04;
    h.feed((f, hl));
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[]);
    f[33] = 9; // destination IP
    h.feed((f, hl));
    assert_eq!(h.zc.stats().not_for_us, 2);
    // Not TCP: UDP, IPv6, an unknown ethertype.
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[]);
    f[23] = 17;
    h.feed((f, hl));
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[]);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    h.feed((f, hl));
    let (mut f, hl) = c.frame(F::ACK, 0, 0, &[]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    h.feed((f, hl));
    assert_eq!(h.zc.stats().not_tcp, 3);
    // Far beyond the window: an ACK in answer.
    h.sent();
    h.feed(c.frame(F::ACK, 50 << 20, 0, &[1; 10]));
    assert_eq!(h.zc.stats().out_of_window, 1);
    assert_eq!(h.sent().len(), 1);
    // A SYN to a closed port: RST.
    let mut other = Client::new(40001);
    let (mut f, hl) = other.frame(F::SYN, 0, 0, &[]);
    f[36..38].copy_from_slice(&81u16.to_be_bytes());
    // Recompute the checksum for the changed port.
    let mut t = packet::tcp::Packet::new_unchecked(&mut f[34..]);
    t.set_dst_port(81);
    t.fill_checksum(packet::checksum::pseudo_header(
        &[10, 0, 0, 2, 10, 0, 0, 1],
        6,
        (hl - 34) as u32,
    ));
    h.feed((f, hl));
    assert_eq!(h.zc.stats().no_listener, 1);
    assert_eq!(h.sent()[0].flags & F::RST, F::RST);
    // A stray ACK: RST.
    other.our_isn = 5;
    h.feed(other.frame(F::ACK, 0, 0, &[]));
    assert_eq!(h.zc.stats().no_connection, 1);
    assert_eq!(h.sent()[0].flags, F::RST);
    assert_eq!(
        h.zc.stats().tcp_segments,
        before.tcp_segments,
        "none reached a connection"
    );
    assert!(h.events().is_empty());
    h.finish();
}

#[test]
fn syns_beyond_max_conns_are_refused() {
    let mut cfg = Harness::cfg();
    cfg.max_conns = 2;
    let mut h = Harness::new(cfg);
    h.connect(&mut Client::new(1));
    h.connect(&mut Client::new(2));
    h.feed(Client::new(3).frame(F::SYN, 0, 0, &[]));
    assert!(h.sent().is_empty(), "silence: the peer retries");
    assert_eq!(h.zc.stats().syn_refused, 1);
    assert_eq!(h.zc.open_connections(), 2);
    h.finish();
}

#[test]
fn arp_requests_for_our_address_are_answered() {
    let mut h = Harness::new(Harness::cfg());
    let mut req = vec![0xff; 6];
    req.extend_from_slice(&PEER_MAC);
    req.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&PEER_MAC);
    req.extend_from_slice(&PEER_IP);
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&OUR_IP);
    h.layout.split = false;
    let n = req.len();
    h.feed((req.clone(), n));
    let mut out = Vec::new();
    h.zc.transmit(|f| {
        out.push(f.to_vec());
        true
    });
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][..6], &PEER_MAC);
    assert_eq!(&out[0][22..28], &OUR_MAC);
    req[41] = 9; // someone else's address
    h.feed((req, n));
    assert_eq!(h.zc.stats().arp_ignored, 1);
    h.finish();
}

#[test]
fn transmit_keeps_what_the_device_refuses() {
    let mut h = Harness::new(Harness::cfg());
    h.feed(Client::new(1).frame(F::SYN, 0, 0, &[]));
    h.zc.transmit(|_| false);
    assert_eq!(h.zc.tx_pending(), 1);
    assert_eq!(h.sent().len(), 1);
    h.finish();
}

#[test]
fn locked_returns_take_one_lock_per_batch() {
    let mut cfg = Harness::cfg();
    cfg.mtu = 1500;
    let mut h = Harness::new(cfg);
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let mut r = h.zc.returner(ReturnMode::Locked, 512);
    let mut off = 0u32;
    let mut given = 0u64;
    for _ in 0..3 {
        for _ in 0..256 {
            h.feed(c.frame(F::ACK, off, 0, &[7; 100]));
            off += 100;
        }
        for e in h.events() {
            if let ZcEvent::Data { chunk, .. } = e {
                r.give_back(chunk);
                given += 1;
            }
        }
        let pool = &mut h.pool;
        h.zc.reclaim(|b| pool.recycle(b));
    }
    let st = r.stats();
    assert_eq!(
        (st.calls, st.short_calls, st.locks, st.pages),
        (1, 0, 1, 512),
        "one lock per 512 pages"
    );
    r.flush();
    let st = r.stats();
    assert_eq!(
        (st.calls, st.short_calls, st.short_chunks, st.locks),
        (2, 1, given - 512, 2),
        "the rest in one short call"
    );
    drop(r);
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    h.finish();
}

/// Returns after the engine and its returner are gone still reach the
/// pool's audit through a chunk's drop... only while the engine lives:
/// a dropped chunk goes back through the refill ring.
#[test]
fn dropped_chunks_return_themselves() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    h.feed(c.frame(F::ACK, 0, 0, &[5; 1000]));
    drop(h.events());
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    assert_eq!(h.zc.held_bytes(conn), Some(0));
    assert_eq!(h.zc.pages_out(), 0);
    h.finish();
}

#[test]
fn chunks_outliving_the_engine_reach_the_pool() {
    let mut h = Harness::new(Harness::cfg());
    h.zc.set_foreign_return(h.pool.returner());
    let mut c = Client::new(40000);
    h.connect(&mut c);
    for i in 0..4u32 {
        h.feed(c.frame(F::ACK, i * 100, 0, &[5; 100]));
    }
    h.feed(c.frame(F::ACK, 1000, 0, &[5; 100])); // out of order, queued
    let mut ev = h.events();
    let mut r = h.zc.returner(ReturnMode::Ring, 64);
    let mut l = h.zc.returner(ReturnMode::Locked, 64);
    let last = ev.pop();
    let Some(ZcEvent::Data { chunk, .. }) = ev.pop() else {
        panic!()
    };
    r.give_back(chunk);
    let Some(ZcEvent::Data { chunk, .. }) = ev.pop() else {
        panic!()
    };
    l.give_back(chunk);
    let Harness { zc, pool, .. } = h;
    drop(zc);
    assert!(pool.audit().lent > 0);
    drop((r, l, last, ev));
    assert_eq!(
        pool.audit().lent,
        0,
        "every page home through the foreign path"
    );
}

/// One arrival of a stream piece in the proptest: `[from, to)`.
fn arrivals() -> impl Strategy<Value = (usize, Vec<(usize, usize)>, Vec<usize>, bool)> {
    (1usize..20_000)
        .prop_flat_map(|len| {
            (
                Just(len),
                prop::collection::vec((0..len, 1usize..3000), 0..40),
                prop::collection::vec(200usize..1460, 1..4),
                any::<bool>(),
            )
        })
        .prop_map(|(len, pieces, sizes, split)| {
            let pieces = pieces
                .into_iter()
                .map(|(a, n)| (a, (a + n).min(len)))
                .collect();
            (len, pieces, sizes, split)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever order, duplication and overlap the pieces arrive in, then
    /// the whole stream once more in order (the retransmissions after
    /// losses), the bytes delivered are the stream, once, in order; and
    /// once everything is returned no page is out.
    #[test]
    fn any_arrival_order_yields_the_stream(
        (len, pieces, sizes, split) in arrivals(),
        ring in any::<bool>(),
        batch in 1usize..8,
        hdr_cut in prop::option::of(20usize..300),
    ) {
        let mut h = Harness::new(Harness::cfg());
        h.layout = Layout {
            split,
            seg: sizes[0].max(500),
            csum: if split { Csum::Good } else { Csum::None },
            hdr_bytes: hdr_cut,
        };
        let mut c = Client::new(40000);
        let conn = h.connect(&mut c);
        let d = pattern(0, len);
        let mut r = h.zc.returner(if ring { ReturnMode::Ring } else { ReturnMode::Locked }, batch);
        let mut got = Vec::new();
        let take = |h: &mut Harness, r: &mut ZcReturner, got: &mut Vec<u8>| {
            for e in h.events() {
                if let ZcEvent::Data { chunk, conn: c2 } = e {
                    assert_eq!(c2, conn);
                    got.extend_from_slice(chunk.bytes());
                    r.give_back(chunk);
                }
            }
            let pool = &mut h.pool;
            h.zc.reclaim(|b| pool.recycle(b));
            h.zc.poll(h.now);
            h.sent();
        };
        for (a, b) in pieces {
            h.feed(c.frame(F::ACK, a as u32, 0, &d[a..b]));
            take(&mut h, &mut r, &mut got);
        }
        let mut a = 0;
        let mut i = 0;
        while a < len {
            let b = (a + sizes[i % sizes.len()]).min(len);
            h.feed(c.frame(F::ACK, a as u32, 0, &d[a..b]));
            take(&mut h, &mut r, &mut got);
            a = b;
            i += 1;
        }
        h.feed(c.frame(F::ACK | F::FIN, len as u32, 0, &[]));
        take(&mut h, &mut r, &mut got);
        prop_assert_eq!(got.len(), len);
        prop_assert!(got == d, "bytes differ");
        drop(r);
        let pool = &mut h.pool;
        h.zc.reclaim(|b| pool.recycle(b));
        prop_assert_eq!(h.zc.held_bytes(conn), Some(0));
        prop_assert!(h.zc.stats().held_bytes_max <= h.zc.config().rcv_buf as u64);
        h.finish();
    }
}

/// A refill ring that is full (only if the engine's page bound were
/// broken) never loses a page: the rest of the batch goes onto the locked
/// list, counted as a lock, and the owner finds it through the flag.
#[test]
fn a_full_refill_ring_falls_back_to_the_locked_list() {
    use super::ret::{drain_ring, lock, Body, Shared};
    let mut pool = pool(8);
    let shared = Shared::new(1, 1); // rings of one page
    let mut r = ZcReturner::new(shared.clone(), ReturnMode::Ring, 4);
    let conn = ConnId { slot: 0, gen: 0 };
    for _ in 0..3 {
        let b = pool.alloc().unwrap();
        r.give_back(ZcChunk {
            body: Body::Page(b),
            off: 0,
            len: 10,
            conn,
            shared: Some(shared.clone()),
        });
    }
    r.flush();
    assert_eq!((r.stats().pages, r.stats().locks), (3, 1));
    let mut rings = Vec::new();
    shared.adopt_rings(&mut rings);
    assert_eq!(rings.len(), 1);
    let n: usize = rings
        .iter_mut()
        .map(|c| drain_ring(c, |(b, _)| pool.recycle(b)))
        .sum();
    assert_eq!(n, 1, "the ring held one");
    assert!(shared.take_locked_flag());
    assert!(!shared.take_locked_flag(), "taking clears it");
    let list = std::mem::take(&mut *lock(&shared.locked));
    assert_eq!(list.len(), 2, "the rest on the list");
    list.into_iter().for_each(|b| pool.recycle(b));
    assert!(shared.take_credited_flag());
    assert_eq!(
        shared.credits[0].load(std::sync::atomic::Ordering::Relaxed),
        30
    );
    assert_eq!(pool.audit().lent, 0);
}

/// Every returner has its own ring; one reclaim drains them all, and a
/// ring whose returner is gone is dropped once empty.
#[test]
fn one_reclaim_drains_every_returners_ring() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    let conn = h.connect(&mut c);
    for i in 0..6u32 {
        h.feed(c.frame(F::ACK, i * 100, 0, &[5; 100]));
    }
    let mut rs: Vec<ZcReturner> = (0..3)
        .map(|_| h.zc.returner(ReturnMode::Ring, 64))
        .collect();
    let mut k = 0;
    for e in h.events() {
        if let ZcEvent::Data { chunk, .. } = e {
            rs[k % 3].give_back(chunk);
            k += 1;
        }
    }
    assert_eq!(k, 6);
    rs.iter_mut().for_each(|r| r.flush());
    assert_eq!(h.zc.pages_out(), 6);
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    assert_eq!(h.zc.pages_out(), 0, "every ring drained in one pass");
    assert_eq!(h.zc.held_bytes(conn), Some(0));
    assert_eq!(h.zc.rings.len(), 3);
    assert!(rs.iter().all(|r| r.stats().locks == 0));
    drop(rs);
    // Adopting a new ring prunes the abandoned, empty ones.
    let _r = h.zc.returner(ReturnMode::Ring, 1);
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    assert_eq!(h.zc.rings.len(), 1);
    h.finish();
}

/// A chunk's reference to the shared state comes home with its page
/// through the refill ring and goes to a later chunk: no reference-count
/// update per chunk once the first round trip is done.
#[test]
fn chunk_references_come_home_through_the_ring() {
    let mut h = Harness::new(Harness::cfg());
    let mut c = Client::new(40000);
    h.connect(&mut c);
    let mut r = h.zc.returner(ReturnMode::Ring, 1);
    h.feed(c.frame(F::ACK, 0, 0, &[5; 100]));
    for e in h.events() {
        if let ZcEvent::Data { chunk, .. } = e {
            r.give_back(chunk);
        }
    }
    assert!(h.zc.spare_refs.is_empty());
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    assert_eq!(h.zc.spare_refs.len(), 1, "the reference came home");
    h.feed(c.frame(F::ACK, 100, 0, &[5; 100]));
    assert!(h.zc.spare_refs.is_empty(), "and went to the next chunk");
    for e in h.events() {
        if let ZcEvent::Data { chunk, .. } = e {
            r.give_back(chunk);
        }
    }
    let pool = &mut h.pool;
    h.zc.reclaim(|b| pool.recycle(b));
    assert_eq!(h.zc.spare_refs.len(), 1);
    drop(r);
    h.finish();
}
