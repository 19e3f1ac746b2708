//! Simulated hardware GRO: receive side coalescing (RSC / LRO) of in-order
//! TCP/IPv4 segments into one large packet, enabled by
//! [`SimConfig::gro`](crate::SimConfig::gro).
//!
//! The 82576 has no RSC; the model is ixgbe's (82599) RSC, simplified where
//! our engine allows it:
//!
//! - **Which segments coalesce.** IPv4 without options, not a fragment, TCP
//!   with exactly ACK or ACK|PSH set (no SYN/FIN/RST/URG/ECE/CWR/NS), at
//!   least one payload byte, right IP and TCP checksums (the device verifies
//!   them to coalesce, whatever RXCSUM says). A segment extends the open run
//!   when its Ethernet header (MACs, VLAN tags, ethertype), its IP header
//!   (except total length, id and checksum), its ports and its TCP header
//!   length equal the run's first segment, its sequence number is the run's
//!   next one (previous seq + previous payload length), the run holds fewer
//!   than `gro` segments and the result stays within 65535 bytes of IP
//!   datagram and within what the ring can ever hold. Anything else closes
//!   the run; the frame that did not match starts the next one (or is
//!   received normally). A run also closes when the wire is empty and at the
//!   end of every engine step (our stand-in for RSC's interrupt-throttle
//!   timer): runs never wait for more frames across steps.
//! - **The delivered header** is rewritten as RSC hardware does: the first
//!   segment's Ethernet, IP and TCP headers (its sequence number, IP id and
//!   TCP options); IPv4 total length covering all the payload and the IP
//!   checksum updated for it (RFC 1624); ACK number and window of the last
//!   segment; flags of the first with PSH or'ed in from any segment. Unlike ixgbe
//!   (which leaves the first segment's TCP checksum), the TCP checksum is
//!   rewritten to be right for the coalesced packet: it costs nothing extra,
//!   since every segment's payload was summed to verify it, and the sums
//!   combine (byte-swapped for a segment starting at an odd offset, RFC 1071
//!   2(B)). The coalesced packet is therefore a valid TCP/IPv4 packet.
//! - **Placement.** One coalesced packet is placed like a jumbo frame, in
//!   consecutive descriptors (ixgbe may chain non-consecutive descriptors
//!   through NEXTP; ours never needs to, since a run is placed at once): the
//!   first descriptor carries the header (HDR_LEN/SPH as for any split
//!   frame) and the first payload bytes, the following ones payload only
//!   (their header buffers stay unused, the driver recycles them as
//!   dummies), EOP on the last. Flow control and the missed-packet counters
//!   treat the packet as a whole: it needs room for all its descriptors, it
//!   waits on the wire (with flow control) or counts one miss per segment.
//! - **Write-back.** Dword 0 bits 20:17, reserved on the 82576, carry
//!   ixgbe's RSCCNT (`RxWbInfo::rsc_cnt`): the number of coalesced segments
//!   whose payload starts in that descriptor, saturating at 15, 0 on
//!   packets that were not coalesced. Summed over a packet's descriptors it
//!   gives the segment count (exact unless segments are shorter than 1/15
//!   of a payload buffer). The EOP descriptor reports the IPv4 checksum
//!   (IPCS, if RXCSUM.IPOFLD) and the TCP checksum (L4CS, if RXCSUM.TUOFLD)
//!   as checked and good, never TCPE: a segment with a bad checksum is never
//!   coalesced (it closes the run and is received alone, with its error
//!   bits). A driver need not and must not re-verify a coalesced packet's
//!   checksum against the segments.
//! - **Counters.** GPRC/GORC count wire segments; `SimStats::rx_frames`
//!   counts packets written to the ring, `gro_packets`/`gro_segments` the
//!   coalesced ones (two or more segments).
//!
//! ```
//! use hw_sim::frames::{Builder, Tcp};
//! use hw_sim::gro::Gro;
//! let b = Builder::default();
//! let seg = |seq| b.tcp(&Tcp { seq, ..Tcp::default() }, &[7; 100]);
//! let mut gro = Gro::new(16);
//! assert!(gro.start(&seg(1000), 65535));
//! assert!(gro.append(&seg(1100)).is_ok());
//! assert!(gro.append(&seg(1300)).is_err()); // a hole: 1200 is missing
//! let (packet, segs) = gro.close().unwrap();
//! assert_eq!((packet.len(), segs), (54 + 200, 2));
//! ```

use crate::frames::{self, parse, Parsed, L3, L4, TCP_ACK, TCP_PSH};
use crate::rx::Steered;
use packet::checksum::{fold, pseudo_header, sum, update};
use packet::{ip_proto, ipv4, tcp};

/// Most segments one coalesced packet may hold (`SimConfig::gro` upper bound).
pub const MAX_GRO: u32 = 64;
/// Largest IPv4 datagram (total length is 16 bits).
const MAX_IP_LEN: usize = ipv4::MAX_PACKET_LEN;
/// Headroom reserved in the staging buffer beyond the largest datagram.
const STAGING: usize = MAX_IP_LEN + 64;
const TCP_FLAGS_OK: u8 = TCP_ACK | TCP_PSH;

/// Why a segment does not extend the open run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Break {
    /// No run is open.
    NoRun,
    /// Not a coalescible segment: not TCP/IPv4, IP options, a fragment,
    /// flags other than ACK/PSH, no payload, or a bad checksum.
    NotEligible,
    /// Another flow, or IP header fields that differ (TTL, TOS, DF).
    OtherFlow,
    /// TCP header (options) length differs.
    OptionsLen,
    /// Sequence number is not the next expected one.
    OutOfOrder,
    /// The run already holds `gro` segments.
    Full,
    /// The coalesced packet would exceed 64 KiB of IP datagram or the ring.
    TooBig,
}

/// A TCP/IPv4 segment that may be coalesced, with what the rules compare.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub parsed: Parsed,
    /// Payload bytes (from the IP total length, so without Ethernet padding).
    payload: usize,
    seq: u32,
    /// Ones-complement sum of the payload as if it started at an even offset.
    payload_sum: u16,
}

/// The IPv4 header bytes a segment must share with the run's first: all
/// but total length, id and checksum.
const SAME_IP: [std::ops::Range<usize>; 3] = [
    ipv4::field::VER_IHL..ipv4::field::TOTAL_LEN,
    ipv4::field::FLAGS_FRAG..ipv4::field::CHECKSUM,
    ipv4::field::ADDRS,
];
/// The TCP header bytes naming the flow: the ports.
const PORTS: std::ops::Range<usize> = tcp::field::SRC_PORT..tcp::field::SEQ;

/// Checks that `f`, parsed as `p`, is a coalescible segment (see the
/// module docs), verifying its IP and TCP checksums. `None` when it does
/// not qualify. Never panics.
pub(crate) fn segment(f: &[u8], p: &Parsed) -> Option<Segment> {
    if p.l3 != L3::Ipv4
        || p.l4 != L4::Tcp
        || p.fragment
        || p.l4_off != p.l3_off + ipv4::MIN_HEADER_LEN
    {
        return None;
    }
    let (l3, l4, l5) = (p.l3_off, p.l4_off, p.l5_off);
    // `parse` saw 20 bytes of IPv4 header at l3 and 20 of TCP at l4.
    let ip = ipv4::Packet::new_unchecked(&f[l3..l4]);
    let tot = ip.total_len();
    if l5 < l4 + tcp::MIN_HEADER_LEN || tot < l5 - l3 || l3 + tot > f.len() {
        return None;
    }
    let t = tcp::Packet::new_unchecked(&f[l4..l5]);
    let flags = t.flags();
    if t.reserved_ns() != 0 || flags & !TCP_FLAGS_OK != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    let payload = tot - (l5 - l3);
    if payload == 0 {
        return None;
    }
    if !ip.checksum_ok() {
        return None;
    }
    let pseudo = pseudo_header(
        ip.addrs(),
        ip_proto::TCP,
        (tot - ipv4::MIN_HEADER_LEN) as u32,
    );
    let payload_sum = fold(sum(&f[l5..l5 + payload], 0));
    let total = fold(sum(&f[l4..l5], pseudo) + payload_sum as u64);
    if total != 0xFFFF && total != 0 {
        return None;
    }
    Some(Segment {
        parsed: *p,
        payload,
        seq: t.seq(),
        payload_sum,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Collecting segments.
    Open,
    /// Header rewritten, waiting to be placed (possibly across steps while
    /// flow control holds it).
    Closed,
}

/// One coalescing context: a run being collected in a staging buffer that
/// is allocated once (64 KiB), so nothing is allocated per frame.
#[derive(Debug)]
pub struct Gro {
    max_segs: u32,
    state: State,
    /// The packet: first segment's frame, then each next segment's payload.
    buf: Vec<u8>,
    /// Frame offsets where each segment's payload starts.
    starts: Vec<u32>,
    /// Largest frame the run may grow to.
    cap: usize,
    l3: usize,
    l4: usize,
    l5: usize,
    next_seq: u32,
    /// Payload sum, each segment aligned to its offset in the packet.
    sum: u64,
    payload: usize,
    /// Last segment's ACK number and window; PSH seen in any segment.
    ack: u32,
    window: u16,
    psh: bool,
    ip_id: u16,
    /// The first segment's headers and queue, which are the packet's.
    steered: Steered,
    /// Sum over segments of wire length + FCS (GORC).
    wire_bytes: u64,
}

/// What the receive path needs to know about a coalesced packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunInfo<'a> {
    /// Frame offsets where each segment's payload starts (RSCCNT).
    pub starts: &'a [u32],
    pub ip_id: u16,
    /// Parsed and steered with the first segment: the coalesced packet has
    /// the same headers (but for lengths and checksums) and flow.
    pub steered: &'a Steered,
    pub wire_bytes: u64,
}

impl RunInfo<'_> {
    pub fn segs(&self) -> u32 {
        self.starts.len() as u32
    }
}

impl Gro {
    /// A context coalescing up to `max_segs` segments (clamped to
    /// 1..=[`MAX_GRO`]; 1 never opens a run).
    pub fn new(max_segs: u32) -> Gro {
        let max_segs = max_segs.clamp(1, MAX_GRO);
        let on = max_segs > 1;
        Gro {
            max_segs,
            state: State::Idle,
            buf: Vec::with_capacity(if on { STAGING } else { 0 }),
            starts: Vec::with_capacity(if on { MAX_GRO as usize } else { 0 }),
            cap: 0,
            l3: 0,
            l4: 0,
            l5: 0,
            next_seq: 0,
            sum: 0,
            payload: 0,
            ack: 0,
            window: 0,
            psh: false,
            ip_id: 0,
            steered: Steered::default(),
            wire_bytes: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_segs > 1
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// A closed packet waits to be placed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The open run holds its maximum number of segments.
    pub fn is_full(&self) -> bool {
        self.state == State::Open && self.starts.len() as u32 >= self.max_segs
    }

    /// Opens a run with `f` if it is a coalescible segment, GRO is on, no
    /// packet is pending, and it fits `cap` bytes (the largest frame the
    /// ring can hold). Returns whether it did; `f` is copied. (The engine
    /// uses `start_seg` with the frame's parse and queue, which the packet
    /// then keeps; here the packet is steered to queue 0.)
    pub fn start(&mut self, f: &[u8], cap: usize) -> bool {
        if !self.enabled() || self.state != State::Idle {
            return false;
        }
        let p = parse(f);
        match segment(f, &p) {
            Some(s) => self.start_seg(
                f,
                &s,
                cap,
                Steered {
                    parsed: p,
                    ..Steered::default()
                },
            ),
            None => false,
        }
    }

    /// [`Gro::start`] for a segment already checked by [`segment`] and
    /// steered (`steered` goes with the packet to the receive path).
    pub(crate) fn start_seg(
        &mut self,
        f: &[u8],
        s: &Segment,
        cap: usize,
        steered: Steered,
    ) -> bool {
        let p = &s.parsed;
        let len = p.l5_off + s.payload;
        if !self.enabled() || self.state != State::Idle || len > cap {
            return false;
        }
        self.cap = cap.min(p.l3_off + MAX_IP_LEN);
        self.buf.clear();
        self.buf.extend_from_slice(&f[..len]);
        self.starts.clear();
        self.starts.push(p.l5_off as u32);
        (self.l3, self.l4, self.l5) = (p.l3_off, p.l4_off, p.l5_off);
        self.next_seq = s.seq.wrapping_add(s.payload as u32);
        self.sum = s.payload_sum as u64;
        self.payload = s.payload;
        let t = tcp::Packet::new_unchecked(&f[p.l4_off..p.l5_off]);
        (self.ack, self.window) = (t.ack(), t.window());
        self.psh = t.flags() & TCP_PSH != 0;
        self.ip_id = p.ip_id;
        self.steered = steered;
        self.wire_bytes = wire_len(f);
        self.state = State::Open;
        true
    }

    /// Adds `f` to the open run if it extends it; else says why not (the
    /// run stays open: the caller closes it).
    pub fn append(&mut self, f: &[u8]) -> Result<(), Break> {
        if self.state != State::Open {
            return Err(Break::NoRun);
        }
        let s = segment(f, &parse(f)).ok_or(Break::NotEligible)?;
        self.append_seg(f, &s)
    }

    /// [`Gro::append`] for a segment already parsed by [`segment`].
    pub(crate) fn append_seg(&mut self, f: &[u8], s: &Segment) -> Result<(), Break> {
        if self.state != State::Open {
            return Err(Break::NoRun);
        }
        let p = &s.parsed;
        let (l3, l4) = (self.l3, self.l4);
        let b = &self.buf;
        let same = |r: &std::ops::Range<usize>, base: usize| {
            f[base + r.start..base + r.end] == b[base + r.start..base + r.end]
        };
        if p.l3_off != l3
            || p.l4_off != l4
            || f[..l3] != b[..l3]
            || !SAME_IP.iter().all(|r| same(r, l3))
            || !same(&PORTS, l4)
        {
            return Err(Break::OtherFlow);
        }
        if p.l5_off != self.l5 {
            return Err(Break::OptionsLen);
        }
        if s.seq != self.next_seq {
            return Err(Break::OutOfOrder);
        }
        if self.starts.len() as u32 >= self.max_segs {
            return Err(Break::Full);
        }
        if self.buf.len() + s.payload > self.cap {
            return Err(Break::TooBig);
        }
        let payload = &f[p.l5_off..p.l5_off + s.payload];
        self.starts.push(self.buf.len() as u32);
        // A payload starting at an odd offset adds its sum byte-swapped.
        self.sum += if self.payload & 1 == 0 {
            s.payload_sum
        } else {
            s.payload_sum.swap_bytes()
        } as u64;
        self.buf.extend_from_slice(payload);
        self.payload += s.payload;
        self.next_seq = s.seq.wrapping_add(s.payload as u32);
        let t = tcp::Packet::new_unchecked(&f[l4..p.l5_off]);
        (self.ack, self.window) = (t.ack(), t.window());
        self.psh |= t.flags() & TCP_PSH != 0;
        self.wire_bytes += wire_len(f);
        Ok(())
    }

    /// Closes the open run (rewriting the header when it holds two or more
    /// segments) and returns the packet and its segment count; a packet
    /// already closed is returned again. `None` when idle.
    pub fn close(&mut self) -> Option<(&[u8], u32)> {
        match self.state {
            State::Idle => return None,
            State::Open => {
                if self.starts.len() > 1 {
                    self.rewrite();
                }
                self.state = State::Closed;
            }
            State::Closed => {}
        }
        Some((&self.buf, self.starts.len() as u32))
    }

    /// The closed packet and what the receive path needs about it.
    pub(crate) fn packet(&self) -> Option<(&[u8], RunInfo<'_>)> {
        (self.state == State::Closed).then(|| {
            (
                &self.buf[..],
                RunInfo {
                    starts: &self.starts,
                    ip_id: self.ip_id,
                    wire_bytes: self.wire_bytes,
                    steered: &self.steered,
                },
            )
        })
    }

    /// The closed packet was placed (or dropped): back to idle.
    pub fn clear(&mut self) {
        self.state = State::Idle;
    }

    /// RSC header rewrite (see the module docs).
    fn rewrite(&mut self) {
        let (l3, l4, l5) = (self.l3, self.l4, self.l5);
        let b = &mut self.buf[..];
        let tot = b.len() - l3;
        let mut ip = ipv4::Packet::new_unchecked(&mut b[l3..l4]);
        // The first segment's header checksum was verified: adjust it for
        // the new length (RFC 1624) rather than sum the header again.
        let c = update(ip.checksum(), ip.total_len() as u16, tot as u16);
        ip.set_total_len(tot as u16);
        ip.set_checksum(c);
        let pseudo = pseudo_header(
            ip.addrs(),
            ip_proto::TCP,
            (tot - ipv4::MIN_HEADER_LEN) as u32,
        );
        let mut t = tcp::Packet::new_unchecked(&mut b[l4..l5]);
        t.set_ack(self.ack);
        t.set_window(self.window);
        if self.psh {
            t.set_flags(t.flags() | TCP_PSH);
        }
        t.set_checksum(0);
        let c = !fold(sum(&b[l4..l5], pseudo) + self.sum);
        tcp::Packet::new_unchecked(&mut b[l4..l5]).set_checksum(c);
    }
}

/// Wire length as the MAC counts it (padded to 60, plus FCS).
fn wire_len(f: &[u8]) -> u64 {
    (f.len().max(frames::ETH_ZLEN) + 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{parse, Builder, Tcp, TCP_FIN, TCP_SYN};

    const URG: u8 = 0x20;
    const RST: u8 = 0x04;

    fn be16(f: &[u8], off: usize) -> u16 {
        u16::from_be_bytes([f[off], f[off + 1]])
    }

    fn be32(f: &[u8], off: usize) -> u32 {
        u32::from_be_bytes([f[off], f[off + 1], f[off + 2], f[off + 3]])
    }

    fn seg(seq: u32, payload: &[u8]) -> Vec<u8> {
        Builder::default().tcp(
            &Tcp {
                seq,
                ack: 77,
                ..Tcp::default()
            },
            payload,
        )
    }

    fn pl(n: usize, seed: u8) -> Vec<u8> {
        frames::payload_pattern(n, seed)
    }

    /// Checks a closed packet: valid checksums, payload = concatenation.
    fn check(packet: &[u8], payloads: &[Vec<u8>], seq: u32) {
        let p = parse(packet);
        assert_eq!(frames::ipv4_header_ok(packet, &p), Some(true));
        assert_eq!(frames::l4_checksum_ok(packet, &p), Some(true));
        let want: Vec<u8> = payloads.concat();
        assert_eq!(&packet[p.l5_off..], &want[..]);
        assert_eq!(be16(packet, p.l3_off + 2) as usize, packet.len() - p.l3_off);
        assert_eq!(be32(packet, p.l4_off + 4), seq);
    }

    #[test]
    fn coalesces_in_order_segments_with_odd_lengths() {
        let mut g = Gro::new(16);
        let payloads: Vec<Vec<u8>> = [1, 7, 100, 3, 1448, 2, 5]
            .iter()
            .enumerate()
            .map(|(i, &n)| pl(n, i as u8))
            .collect();
        let mut seq = 0xFFFF_FF00u32; // wraps
        assert!(g.start(&seg(seq, &payloads[0]), 65535));
        seq = seq.wrapping_add(1);
        for p in &payloads[1..] {
            assert_eq!(g.append(&seg(seq, p)), Ok(()));
            seq = seq.wrapping_add(p.len() as u32);
        }
        let (packet, n) = g.close().unwrap();
        assert_eq!(n, 7);
        let packet = packet.to_vec();
        check(&packet, &payloads, 0xFFFF_FF00);
        assert_eq!(g.packet().unwrap().1.starts.len(), 7);
        g.clear();
        assert!(!g.is_open() && g.close().is_none());
    }

    #[test]
    fn last_ack_window_and_psh_are_kept() {
        let b = Builder::default();
        let mut g = Gro::new(4);
        let t = Tcp {
            seq: 10,
            ack: 1,
            window: 100,
            flags: TCP_ACK,
            ..Tcp::default()
        };
        assert!(g.start(&b.tcp(&t, &[1; 10]), 65535));
        let t2 = Tcp {
            seq: 20,
            ack: 9,
            window: 200,
            flags: TCP_ACK | TCP_PSH,
            ..Tcp::default()
        };
        g.append(&b.tcp(&t2, &[2; 10])).unwrap();
        let t3 = Tcp {
            seq: 30,
            ack: 12,
            window: 300,
            flags: TCP_ACK,
            ..Tcp::default()
        };
        g.append(&b.tcp(&t3, &[3; 10])).unwrap();
        let (f, _) = g.close().unwrap();
        let p = parse(f);
        assert_eq!(be32(f, p.l4_off + 8), 12);
        assert_eq!(be16(f, p.l4_off + 14), 300);
        assert_eq!(f[p.l4_off + 13], TCP_ACK | TCP_PSH);
        assert_eq!(frames::l4_checksum_ok(f, &p), Some(true));
    }

    #[test]
    fn rules_break_runs() {
        let b = Builder::default();
        let open = |g: &mut Gro| {
            g.clear();
            assert!(g.start(&seg(1000, &[1; 100]), 65535));
        };
        let mut g = Gro::new(64);
        assert_eq!(g.append(&seg(1100, &[1; 100])), Err(Break::NoRun));

        // Out of order: a hole, a retransmission.
        open(&mut g);
        assert_eq!(g.append(&seg(1200, &[1; 100])), Err(Break::OutOfOrder));
        assert_eq!(g.append(&seg(1000, &[1; 100])), Err(Break::OutOfOrder));
        // Flag changes: FIN, SYN, RST, URG, no ACK.
        for flags in [
            TCP_ACK | TCP_FIN,
            TCP_ACK | TCP_SYN,
            TCP_ACK | RST,
            TCP_ACK | URG,
            TCP_PSH,
        ] {
            let f = b.tcp(
                &Tcp {
                    seq: 1100,
                    ack: 77,
                    flags,
                    ..Tcp::default()
                },
                &[1; 100],
            );
            assert_eq!(g.append(&f), Err(Break::NotEligible), "flags {flags:#x}");
        }
        // Other flows: port, source address, TTL; options length.
        let other = b.tcp(
            &Tcp {
                seq: 1100,
                ack: 77,
                src_port: 9,
                ..Tcp::default()
            },
            &[1; 100],
        );
        assert_eq!(g.append(&other), Err(Break::OtherFlow));
        let other = Builder {
            src_ip: [10, 0, 0, 1],
            ..Builder::default()
        }
        .tcp(
            &Tcp {
                seq: 1100,
                ack: 77,
                ..Tcp::default()
            },
            &[1; 100],
        );
        assert_eq!(g.append(&other), Err(Break::OtherFlow));
        let other = Builder {
            ttl: 3,
            ..Builder::default()
        }
        .tcp(
            &Tcp {
                seq: 1100,
                ack: 77,
                ..Tcp::default()
            },
            &[1; 100],
        );
        assert_eq!(g.append(&other), Err(Break::OtherFlow));
        let opts = b.tcp(
            &Tcp {
                seq: 1100,
                ack: 77,
                options: vec![1; 12],
                ..Tcp::default()
            },
            &[1; 100],
        );
        assert_eq!(g.append(&opts), Err(Break::OptionsLen));
        // Not eligible: pure ACK, bad checksum, UDP, IP options.
        assert_eq!(g.append(&seg(1100, &[])), Err(Break::NotEligible));
        let mut bad = seg(1100, &[1; 100]);
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(g.append(&bad), Err(Break::NotEligible));
        assert_eq!(
            g.append(&frames::udp_frame(200, 1)),
            Err(Break::NotEligible)
        );
        let ipopt = Builder {
            ip_options: vec![1; 4],
            ..Builder::default()
        }
        .tcp(
            &Tcp {
                seq: 1100,
                ack: 77,
                ..Tcp::default()
            },
            &[1; 100],
        );
        assert_eq!(g.append(&ipopt), Err(Break::NotEligible));
        // The run is untouched by refused segments.
        assert_eq!(g.append(&seg(1100, &[1; 100])), Ok(()));

        // Segment count limit.
        let mut g4 = Gro::new(4);
        assert!(g4.start(&seg(0, &[1; 10]), 65535));
        for i in 1..4 {
            assert_eq!(g4.append(&seg(i * 10, &[1; 10])), Ok(()));
        }
        assert!(g4.is_full());
        assert_eq!(g4.append(&seg(40, &[1; 10])), Err(Break::Full));

        // 64 KiB limit: 44 segments of 1460 = 64240 B fit, the 45th does not.
        g.clear();
        let big = pl(1460, 3);
        assert!(g.start(&seg(0, &big), usize::MAX));
        let mut seq = 1460;
        for _ in 1..44 {
            assert_eq!(g.append(&seg(seq, &big)), Ok(()));
            seq += 1460;
        }
        assert_eq!(g.append(&seg(seq, &big)), Err(Break::TooBig));
        // Smaller segments still fit up to exactly 65535 bytes of datagram.
        let room = 65535 - 40 - 44 * 1460;
        assert_eq!(g.append(&seg(seq, &pl(room + 1, 1))), Err(Break::TooBig));
        assert_eq!(g.append(&seg(seq, &pl(room, 1))), Ok(()));
        let (f, n) = g.close().unwrap();
        assert_eq!((f.len(), n), (14 + 65535, 45));
        assert_eq!(frames::l4_checksum_ok(f, &parse(f)), Some(true));

        // The ring's capacity limits too; a first segment over it never starts.
        let mut g = Gro::new(64);
        assert!(!g.start(&seg(0, &big), 1000));
        assert!(g.start(&seg(0, &big), 2500));
        assert_eq!(g.append(&seg(1460, &big)), Err(Break::TooBig));
        // GRO off never opens a run.
        assert!(!Gro::new(1).start(&seg(0, &big), usize::MAX));
    }

    #[test]
    fn garbage_never_panics() {
        let f = seg(5, &[9; 64]);
        let mut g = Gro::new(8);
        for n in 0..f.len() {
            let _ = segment(&f[..n], &parse(&f[..n]));
            let _ = g.append(&f[..n]);
        }
        let mut x = f.clone();
        x[16] = 0xFF; // IP total length past the end
        x[17] = 0xFF;
        assert!(segment(&x, &parse(&x)).is_none());
        let mut x = f.clone();
        x[46] = 0x10; // TCP data offset 4 (< 20 bytes)
        assert!(segment(&x, &parse(&x)).is_none());
    }
}
