//! TCP segment counters smoltcp does not keep, computed from the sequence
//! numbers of the segments a device receives and sends.
//!
//! Receive side, per connection: data segments (`TcpInSegs` counts them
//! with their ACKs), out-of-order segments (starting beyond the highest
//! byte received so far: `TcpExtTCPOFOQueue`), retransmitted segments
//! (starting below it) and, among those, duplicates that carry no byte not
//! received before (`TcpExtTCPDSACKOldSent`, the ones Linux would answer
//! with a D-SACK). Send side: zero-window advertisements
//! (`TcpExtTCPToZeroWindowAdv`: the window we announce went from non-zero
//! to zero), retransmitted segments (`TcpRetransSegs`: data starting below
//! the highest byte sent) and, among those, retransmissions after the
//! connection sent nothing for [`TIMEOUT_GAP`] (an estimate of
//! `TcpExtTCPTimeouts`: a fast retransmit follows duplicate ACKs at once).
//!
//! Holes are tracked as a short list of ranges, like smoltcp's assembler;
//! when more than [`MAX_HOLES`] are open the oldest is forgotten (a later
//! segment filling it then counts as a duplicate, not a retransmission).
//!
//! Receive-side discards: smoltcp drops data without counting it, so the
//! device replays smoltcp's acceptance test (`tcp::Socket::process`) on
//! what it sees: the right edge of the window is the ACK number plus the
//! window (shifted by our window scale) of the last segment smoltcp built
//! for the connection, the left edge is the next byte in order, and the
//! out-of-order ranges smoltcp's assembler holds are modelled with its
//! limit ([`ASSEMBLER_RANGES`]). A data segment that arrives with the
//! window at zero is `TcpExtTCPZeroWindowDrop` (smoltcp drops it whole);
//! one with bytes beyond the right edge is `InOverWindowSegs` (those bytes
//! dropped, the whole segment when it does not start inside the window);
//! one the assembler cannot take because it would open a range beyond the
//! limit is `TcpExtTCPOFODrop` (dropped whole).

use smoltcp::time::{Duration, Instant};
use std::collections::HashMap;

/// Holes tracked per connection.
pub const MAX_HOLES: usize = 32;
/// Connections tracked per device; segments of further ones are counted in
/// the totals only.
pub const MAX_CONNS: usize = 4096;
/// Silence before a retransmission that makes it a timeout.
pub const TIMEOUT_GAP: Duration = Duration::from_millis(200);
/// Out-of-order ranges smoltcp's assembler holds per socket (the
/// workspace builds smoltcp with `assembler-max-segment-count-32`).
pub const ASSEMBLER_RANGES: usize = 32;

/// Counters of one connection or of all of them, named after the Linux
/// counters `nstat` shows where one fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[allow(non_snake_case)]
pub struct SegCounters {
    /// Segments received (with or without data).
    pub TcpInSegs: u64,
    /// Data segments received beyond a hole (out of order).
    pub TcpExtTCPOFOQueue: u64,
    /// Data segments received that start below the highest byte received
    /// (retransmissions seen by the receiver).
    pub InRetransSegs: u64,
    /// Of those, segments with no byte not received before (duplicates).
    pub TcpExtTCPDSACKOldSent: u64,
    /// Segments sent (with or without data).
    pub TcpOutSegs: u64,
    /// Times the window we advertise dropped to zero.
    pub TcpExtTCPToZeroWindowAdv: u64,
    /// Data segments sent that start below the highest byte sent.
    pub TcpRetransSegs: u64,
    /// Of those, the ones after [`TIMEOUT_GAP`] of silence (estimate).
    pub TcpExtTCPTimeouts: u64,
    /// Data segments received while the window we last advertised was
    /// zero (discarded).
    pub TcpExtTCPZeroWindowDrop: u64,
    /// Data segments received with bytes beyond the right edge of the
    /// window we last advertised (those bytes discarded; the whole segment
    /// if it does not start inside the window). No Linux counter: its drop
    /// reason `TCP_OVERWINDOW`.
    pub InOverWindowSegs: u64,
    /// Data segments inside the window that smoltcp's assembler could not
    /// take: they would have opened more than [`ASSEMBLER_RANGES`]
    /// out-of-order ranges (discarded).
    pub TcpExtTCPOFODrop: u64,
}

impl SegCounters {
    /// Adds `o` to these counters.
    pub fn add(&mut self, o: &SegCounters) {
        self.TcpInSegs += o.TcpInSegs;
        self.TcpExtTCPOFOQueue += o.TcpExtTCPOFOQueue;
        self.InRetransSegs += o.InRetransSegs;
        self.TcpExtTCPDSACKOldSent += o.TcpExtTCPDSACKOldSent;
        self.TcpOutSegs += o.TcpOutSegs;
        self.TcpExtTCPToZeroWindowAdv += o.TcpExtTCPToZeroWindowAdv;
        self.TcpRetransSegs += o.TcpRetransSegs;
        self.TcpExtTCPTimeouts += o.TcpExtTCPTimeouts;
        self.TcpExtTCPZeroWindowDrop += o.TcpExtTCPZeroWindowDrop;
        self.InOverWindowSegs += o.InOverWindowSegs;
        self.TcpExtTCPOFODrop += o.TcpExtTCPOFODrop;
    }
}

/// A connection as seen from this device: our port, the peer's address and
/// port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub local_port: u16,
    pub remote_ip: [u8; 4],
    pub remote_port: u16,
}

#[derive(Debug, Default)]
struct Conn {
    c: SegCounters,
    /// Receive side: one past the highest byte received, once known.
    rx_high: Option<u32>,
    /// Missing ranges below `rx_high` (start, end), oldest first.
    holes: Vec<(u32, u32)>,
    /// Send side: one past the highest byte sent, once known.
    tx_high: Option<u32>,
    last_tx: Option<Instant>,
    zero_window: bool,
    /// smoltcp's receive state, as far as the segments show it.
    accept: Accept,
}

/// What smoltcp accepts on a connection's receive side: the window we
/// last advertised and its assembler's out-of-order ranges.
#[derive(Debug, Default)]
struct Accept {
    /// The next byte in order (smoltcp's window start), once the peer's
    /// SYN was seen.
    next: Option<u32>,
    /// The right edge of the window in the last segment we built (`None`:
    /// that segment carried no ACK, or none was built: a zero window).
    right: Option<u32>,
    /// Window scale we offered in our SYN, and whether the peer's SYN
    /// offered one (both: our windows are shifted, as smoltcp does).
    our_scale: Option<u8>,
    peer_scaled: bool,
    /// Received ranges beyond `next` (start, end), in order, apart.
    ranges: Vec<(u32, u32)>,
}

impl Accept {
    fn shift(&self) -> u8 {
        match (self.our_scale, self.peer_scaled) {
            (Some(s), true) => s,
            _ => 0,
        }
    }

    /// A segment we built (sent or not: smoltcp's state follows either).
    fn built(&mut self, s: &Seg) {
        if s.syn {
            self.our_scale = s.wscale;
        }
        self.right = s
            .ack
            .map(|a| a.wrapping_add((s.window as u32) << self.shift()));
    }

    /// A segment received: the counter it adds to, if smoltcp discards
    /// (some of) it. Mirrors the acceptance test and the assembler of
    /// smoltcp 0.14's `tcp::Socket::process`.
    fn received(&mut self, s: &Seg, d: &mut SegCounters) {
        if s.syn {
            self.peer_scaled = s.wscale.is_some();
            self.next = Some(s.seq.wrapping_add(1));
            self.ranges.clear();
            return;
        }
        let Some(ws) = self.next else { return };
        if s.payload == 0 {
            return;
        }
        let we = self.right.unwrap_or(ws);
        // Signed offsets from the window start, as smoltcp compares
        // sequence numbers.
        let rel = |x: u32| x.wrapping_sub(ws) as i32 as i64;
        let (os, oe, win) = (rel(s.seq), rel(s.seq.wrapping_add(s.payload)), rel(we));
        if win <= 0 {
            d.TcpExtTCPZeroWindowDrop = 1;
            return;
        }
        if oe > win {
            d.InOverWindowSegs = 1;
        }
        // smoltcp's test: the segment starts or ends inside the window.
        if !((0 <= os && os < win) || (0 < oe && oe <= win)) {
            return;
        }
        let (a, b) = (os.max(0) as u32, oe.min(win) as u32);
        self.add(ws, a, b, d);
    }

    /// The assembler: `[a, b)` as offsets from `ws`.
    fn add(&mut self, ws: u32, a: u32, b: u32, d: &mut SegCounters) {
        let off = |x: u32| x.wrapping_sub(ws);
        if a == 0 {
            // In order: always taken; it may join ranges held beyond.
            let mut next = b;
            while let Some(&(rs, re)) = self.ranges.first() {
                if off(rs) > next {
                    break;
                }
                next = next.max(off(re));
                self.ranges.remove(0);
            }
            self.next = Some(ws.wrapping_add(next));
            return;
        }
        // Ranges [a, b) touches or overlaps (touching joins, as smoltcp's
        // contigs do).
        let first = self.ranges.iter().position(|&(_, re)| a <= off(re));
        let last = self.ranges.iter().rposition(|&(rs, _)| off(rs) <= b);
        match (first, last) {
            (Some(i), Some(j)) if i <= j => {
                let start = a.min(off(self.ranges[i].0));
                let end = b.max(off(self.ranges[j].1));
                self.ranges
                    .splice(i..=j, [(ws.wrapping_add(start), ws.wrapping_add(end))]);
            }
            _ if self.ranges.len() >= ASSEMBLER_RANGES => d.TcpExtTCPOFODrop = 1,
            _ => {
                let at = first.unwrap_or(self.ranges.len());
                self.ranges
                    .insert(at, (ws.wrapping_add(a), ws.wrapping_add(b)));
            }
        }
    }
}

/// `a < b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The TCP/IPv4 fields the counters need.
struct Seg {
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    src_port: u16,
    dst_port: u16,
    seq: u32,
    /// Sequence space taken: payload bytes, plus one each for SYN and FIN.
    len: u32,
    payload: u32,
    syn: bool,
    /// The acknowledgment number, when ACK is set.
    ack: Option<u32>,
    window: u16,
    /// The window scale option (SYN segments only).
    wscale: Option<u8>,
}

/// The window scale option among TCP options; `None` when absent or
/// malformed.
fn window_scale(mut opts: &[u8]) -> Option<u8> {
    while let Some(&kind) = opts.first() {
        match kind {
            0 => return None,
            1 => opts = &opts[1..],
            _ => {
                let len = *opts.get(1)? as usize;
                if len < 2 || len > opts.len() {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return Some(opts[2]);
                }
                opts = &opts[len..];
            }
        }
    }
    None
}

impl ConnKey {
    /// The connection a segment we received belongs to.
    fn received(s: &Seg) -> ConnKey {
        ConnKey {
            local_port: s.dst_port,
            remote_ip: s.src_ip,
            remote_port: s.src_port,
        }
    }

    /// The connection a segment we sent belongs to.
    fn sent(s: &Seg) -> ConnKey {
        ConnKey {
            local_port: s.src_port,
            remote_ip: s.dst_ip,
            remote_port: s.dst_port,
        }
    }
}

/// Parses an Ethernet + IPv4 + TCP frame (no VLAN); `None` for anything
/// else, fragments and truncated headers. Never panics.
fn parse(f: &[u8]) -> Option<Seg> {
    if f.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = f.get(14..)?;
    let ihl = (*ip.first()? & 0x0F) as usize * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || *ip.get(9)? != 6 {
        return None;
    }
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3FFF != 0 {
        return None;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let tcp = ip.get(ihl..)?;
    let doff = (*tcp.get(12)? >> 4) as usize * 4;
    if doff < 20 || total < ihl + doff {
        return None;
    }
    let flags = *tcp.get(13)?;
    let (syn, fin, ack) = (flags & 0x02 != 0, flags & 0x01 != 0, flags & 0x10 != 0);
    let payload = (total - ihl - doff) as u32;
    let wscale = if syn {
        window_scale(tcp.get(20..doff)?)
    } else {
        None
    };
    Some(Seg {
        src_ip: ip.get(12..16)?.try_into().ok()?,
        dst_ip: ip.get(16..20)?.try_into().ok()?,
        src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        len: payload + syn as u32 + fin as u32,
        payload,
        syn,
        ack: ack.then(|| u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]])),
        window: u16::from_be_bytes([*tcp.get(14)?, *tcp.get(15)?]),
        wscale,
    })
}

/// Per-connection and total counters of one device.
#[derive(Debug, Default)]
pub struct SegStats {
    /// Index into `list` by key.
    index: HashMap<ConnKey, usize>,
    list: Vec<(ConnKey, Conn)>,
    /// The connection of the last segment: a flow's segments come in runs,
    /// so most lookups skip the hash.
    last: Option<usize>,
    total: SegCounters,
    /// Segments of connections beyond [`MAX_CONNS`] (in `total` only).
    pub untracked: u64,
}

impl SegStats {
    pub fn new() -> SegStats {
        SegStats::default()
    }

    fn conn(&mut self, key: ConnKey) -> Option<&mut Conn> {
        let i = match self.last {
            Some(i) if self.list[i].0 == key => i,
            _ => match self.index.get(&key) {
                Some(&i) => i,
                None if self.list.len() >= MAX_CONNS => {
                    self.untracked += 1;
                    return None;
                }
                None => {
                    self.list.push((key, Conn::default()));
                    self.index.insert(key, self.list.len() - 1);
                    self.list.len() - 1
                }
            },
        };
        self.last = Some(i);
        Some(&mut self.list[i].1)
    }

    /// A frame the device received.
    pub fn rx(&mut self, frame: &[u8]) {
        let Some(s) = parse(frame) else { return };
        let key = ConnKey::received(&s);
        let mut d = SegCounters {
            TcpInSegs: 1,
            ..SegCounters::default()
        };
        if let Some(c) = self.conn(key) {
            Self::rx_seq(c, &s, &mut d);
            c.accept.received(&s, &mut d);
            c.c.add(&d);
        }
        self.total.add(&d);
    }

    fn rx_seq(c: &mut Conn, s: &Seg, d: &mut SegCounters) {
        let start = s.seq.wrapping_add(s.syn as u32);
        let end = s.seq.wrapping_add(s.len);
        if s.syn {
            c.rx_high = Some(end);
            c.holes.clear();
            return;
        }
        let Some(high) = c.rx_high else {
            // Joined mid-stream: start from here.
            c.rx_high = Some(end);
            return;
        };
        if start == end {
            return; // no data (a pure ACK)
        }
        if before(high, start) {
            d.TcpExtTCPOFOQueue = 1;
            if c.holes.len() == MAX_HOLES {
                c.holes.remove(0);
            }
            c.holes.push((high, start));
            c.rx_high = Some(end);
        } else if before(start, high) {
            d.InRetransSegs = 1;
            let mut new = false;
            let mut i = 0;
            while i < c.holes.len() {
                let (hs, he) = c.holes[i];
                // Overlap of [start, end) with the hole [hs, he).
                if before(start, he) && before(hs, end) {
                    new = true;
                    let mut rest = Vec::with_capacity(2);
                    if before(hs, start) {
                        rest.push((hs, start));
                    }
                    if before(end, he) {
                        rest.push((end, he));
                    }
                    let n = rest.len();
                    c.holes.splice(i..i + 1, rest);
                    i += n;
                } else {
                    i += 1;
                }
            }
            if before(high, end) {
                new = true;
                c.rx_high = Some(end);
            }
            if !new {
                d.TcpExtTCPDSACKOldSent = 1;
            }
        } else {
            c.rx_high = Some(end);
        }
    }

    /// A frame the device sent at `now`.
    pub fn tx(&mut self, frame: &[u8], now: Instant) {
        let Some(s) = parse(frame) else { return };
        let key = ConnKey::sent(&s);
        let mut d = SegCounters {
            TcpOutSegs: 1,
            ..SegCounters::default()
        };
        if let Some(c) = self.conn(key) {
            c.accept.built(&s);
            let zero = s.window == 0 && !s.syn;
            if zero && !c.zero_window {
                d.TcpExtTCPToZeroWindowAdv = 1;
            }
            c.zero_window = zero;
            let end = s.seq.wrapping_add(s.len);
            match c.tx_high {
                Some(high) if s.len > 0 && before(s.seq, high) => {
                    d.TcpRetransSegs = 1;
                    if c.last_tx.is_some_and(|t| now - t >= TIMEOUT_GAP) {
                        d.TcpExtTCPTimeouts = 1;
                    }
                    if before(high, end) {
                        c.tx_high = Some(end);
                    }
                }
                Some(high) if !before(end, high) => c.tx_high = Some(end),
                None => c.tx_high = Some(end),
                _ => {}
            }
            c.last_tx = Some(now);
            c.c.add(&d);
        }
        self.total.add(&d);
    }

    /// A frame smoltcp built that the device could not send: smoltcp
    /// counts it sent (the window it advertises is the one in it), so the
    /// receive-side model takes it; the counters do not.
    pub fn built_not_sent(&mut self, frame: &[u8]) {
        let Some(s) = parse(frame) else { return };
        let key = ConnKey::sent(&s);
        if let Some(c) = self.conn(key) {
            c.accept.built(&s);
        }
    }

    /// Totals over every connection.
    pub fn total(&self) -> &SegCounters {
        &self.total
    }

    /// Per connection, sorted by key.
    pub fn per_conn(&self) -> Vec<(ConnKey, SegCounters)> {
        let mut v: Vec<_> = self.list.iter().map(|(k, c)| (*k, c.c)).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 frame from 10.0.0.2:5000 to 10.0.0.1:9000 (or back).
    fn seg(back: bool, seq: u32, payload: usize, flags: u8, window: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12] = 0x08;
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        ip[9] = 6;
        let (a, b) = ([10, 0, 0, 2], [10, 0, 0, 1]);
        let (src, dst, sp, dp) = if back {
            (b, a, 9000u16, 5000u16)
        } else {
            (a, b, 5000, 9000)
        };
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let t = &mut ip[20..];
        t[0..2].copy_from_slice(&sp.to_be_bytes());
        t[2..4].copy_from_slice(&dp.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&window.to_be_bytes());
        f
    }

    #[test]
    fn receive_side_counts_ofo_retransmissions_and_duplicates() {
        let mut s = SegStats::new();
        let isn = u32::MAX - 3000; // wraps during the test
        s.rx(&seg(false, isn, 0, 0x02, 100)); // SYN
        let d = |i: u32| isn.wrapping_add(1 + i * 1000);
        s.rx(&seg(false, d(0), 1000, 0x10, 100));
        s.rx(&seg(false, d(2), 1000, 0x10, 100)); // hole [1]
        s.rx(&seg(false, d(3), 1000, 0x10, 100));
        s.rx(&seg(false, d(1), 1000, 0x10, 100)); // fills it
        s.rx(&seg(false, d(1), 1000, 0x10, 100)); // duplicate
        s.rx(&seg(false, d(4), 0, 0x10, 100)); // pure ACK
        s.rx(&seg(false, d(4), 1000, 0x10, 100));
        let t = *s.total();
        assert_eq!(t.TcpInSegs, 8);
        assert_eq!(t.TcpExtTCPOFOQueue, 1);
        assert_eq!(t.InRetransSegs, 2);
        assert_eq!(t.TcpExtTCPDSACKOldSent, 1);
        let pc = s.per_conn();
        assert_eq!(pc.len(), 1);
        assert_eq!(pc[0].0.local_port, 9000);
        assert_eq!(pc[0].1, t);
    }

    #[test]
    fn send_side_counts_retransmissions_timeouts_and_zero_windows() {
        let mut s = SegStats::new();
        let t0 = Instant::from_millis(0);
        let ms = |m: u64| t0 + Duration::from_millis(m);
        s.tx(&seg(true, 100, 0, 0x12, 500), ms(0)); // SYN-ACK
        s.tx(&seg(true, 101, 1000, 0x10, 500), ms(1));
        s.tx(&seg(true, 1101, 1000, 0x10, 0), ms(2)); // window closed
        s.tx(&seg(true, 2101, 0, 0x10, 0), ms(3)); // still closed: no event
        s.tx(&seg(true, 1101, 1000, 0x10, 10), ms(4)); // fast retransmit
        s.tx(&seg(true, 2101, 0, 0x10, 0), ms(5)); // closed again
        s.tx(&seg(true, 101, 1000, 0x10, 10), ms(900)); // after silence
        let t = *s.total();
        assert_eq!(t.TcpOutSegs, 7);
        assert_eq!(t.TcpExtTCPToZeroWindowAdv, 2);
        assert_eq!(t.TcpRetransSegs, 2);
        assert_eq!(t.TcpExtTCPTimeouts, 1);
    }

    #[test]
    fn connections_are_counted_apart() {
        let mut s = SegStats::new();
        let other = |seq: u32| {
            let mut f = seg(false, seq, 100, 0x10, 1);
            f[14 + 20..14 + 22].copy_from_slice(&5001u16.to_be_bytes());
            f
        };
        for i in 0..3u32 {
            s.rx(&seg(false, 1000 + i * 100, 100, 0x10, 1));
            s.rx(&other(7000 + i * 100));
            s.rx(&other(7000)); // a duplicate every time after the first
        }
        let pc = s.per_conn();
        assert_eq!(pc.len(), 2);
        assert_eq!((pc[0].0.remote_port, pc[0].1.TcpInSegs), (5000, 3));
        assert_eq!(pc[0].1.InRetransSegs, 0);
        assert_eq!((pc[1].0.remote_port, pc[1].1.TcpInSegs), (5001, 6));
        assert_eq!(pc[1].1.TcpExtTCPDSACKOldSent, 3);
        assert_eq!(s.total().TcpInSegs, 9);
    }

    /// [`seg`] with an acknowledgment number (sets ACK) and, on a SYN, a
    /// window scale option.
    fn seg_ack(
        back: bool,
        seq: u32,
        ack: u32,
        payload: usize,
        window: u16,
        wscale: Option<u8>,
    ) -> Vec<u8> {
        let syn = wscale.is_some();
        let mut f = seg(
            back,
            seq,
            payload,
            0x10 | if syn { 0x02 } else { 0 },
            window,
        );
        f[14 + 20 + 8..14 + 20 + 12].copy_from_slice(&ack.to_be_bytes());
        if let Some(ws) = wscale {
            // NOP + window scale: the header grows by 4 bytes.
            f.splice(14 + 40..14 + 40, [1, 3, 3, ws]);
            f[14 + 20 + 12] = 6 << 4;
            let total = (44 + payload) as u16;
            f[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
        }
        f
    }

    /// A connection set up with the peer's SYN at `isn` (window scale
    /// offered) and our SYN-ACK offering `shift` and `window`.
    fn handshake(s: &mut SegStats, isn: u32, shift: u8, window: u16) {
        let mut syn = seg_ack(false, isn, 0, 0, 1000, Some(7));
        syn[14 + 20 + 13] = 0x02; // SYN only
        s.rx(&syn);
        s.tx(
            &seg_ack(true, 500, isn.wrapping_add(1), 0, window, Some(shift)),
            Instant::from_millis(0),
        );
    }

    #[test]
    fn data_beyond_the_advertised_window_is_counted() {
        let mut s = SegStats::new();
        let isn = u32::MAX - 1500; // wraps during the test
                                   // Window 1000 << 2 = 4000 bytes from isn + 1 (smoltcp scales the
                                   // SYN-ACK's window too).
        handshake(&mut s, isn, 2, 1000);
        let d = |i: u32| isn.wrapping_add(1 + i);
        s.rx(&seg(false, d(0), 1000, 0x10, 1)); // inside
        s.rx(&seg(false, d(3500), 1000, 0x10, 1)); // crosses the edge: trimmed
        s.rx(&seg(false, d(4000), 1000, 0x10, 1)); // wholly beyond
        s.rx(&seg(false, d(1000), 1000, 0x10, 1)); // inside again
        let t = *s.total();
        assert_eq!(t.InOverWindowSegs, 2);
        assert_eq!((t.TcpExtTCPZeroWindowDrop, t.TcpExtTCPOFODrop), (0, 0));
        // We ACK 2000 with the window closed: data is dropped until the
        // window opens again.
        s.tx(
            &seg_ack(true, 501, d(2000), 0, 0, None),
            Instant::from_millis(1),
        );
        s.rx(&seg(false, d(2000), 1000, 0x10, 1));
        s.rx(&seg(false, d(2000), 0, 0x10, 1)); // a pure ACK: nothing dropped
        assert_eq!(s.total().TcpExtTCPZeroWindowDrop, 1);
        s.tx(
            &seg_ack(true, 501, d(2000), 0, 250, None),
            Instant::from_millis(2),
        );
        s.rx(&seg(false, d(2000), 500, 0x10, 1));
        s.rx(&seg(false, d(2500), 1000, 0x10, 1)); // 3000..3500 is beyond 3000
        let t = *s.total();
        assert_eq!((t.TcpExtTCPZeroWindowDrop, t.InOverWindowSegs), (1, 3));
        // The window is used up (no ACK since): a zero window again.
        s.rx(&seg(false, d(3000), 100, 0x10, 1));
        assert_eq!(s.total().TcpExtTCPZeroWindowDrop, 2);
    }

    #[test]
    fn a_segment_spanning_the_whole_window_is_dropped_as_smoltcp_does() {
        let mut s = SegStats::new();
        handshake(&mut s, 0, 0, 1000);
        s.rx(&seg(false, 1, 500, 0x10, 1));
        // Starts before the window (500) and ends beyond it (1001): smoltcp
        // takes neither end as inside and drops it.
        s.rx(&seg(false, 1, 1200, 0x10, 1));
        assert_eq!(s.total().InOverWindowSegs, 1);
        // Not taken: the next segment at 501 is in order.
        s.rx(&seg(false, 501, 500, 0x10, 1));
        assert_eq!(s.list[0].1.accept.next, Some(1001));
    }

    #[test]
    fn segments_the_assembler_cannot_hold_are_counted() {
        let mut s = SegStats::new();
        handshake(&mut s, 0, 4, 0xFFFF);
        let at = |i: u32| 1 + i * 100;
        // Ranges at 1, 3, 5, ...: each opens a range of its own.
        for i in 0..ASSEMBLER_RANGES as u32 {
            s.rx(&seg(false, at(1 + 2 * i), 100, 0x10, 1));
        }
        assert_eq!(s.total().TcpExtTCPOFODrop, 0);
        let beyond = at(1 + 2 * ASSEMBLER_RANGES as u32);
        s.rx(&seg(false, beyond, 100, 0x10, 1)); // a 33rd range: dropped
        s.rx(&seg(false, at(4) + 25, 50, 0x10, 1)); // inside hole 4, apart: dropped
        s.rx(&seg(false, at(4), 100, 0x10, 1)); // touches both sides: joins them
        s.rx(&seg(false, at(2), 100, 0x10, 1)); // fills a hole: joins
        assert_eq!(s.total().TcpExtTCPOFODrop, 2);
        s.rx(&seg(false, beyond, 100, 0x10, 1)); // room again
        assert_eq!(s.total().TcpExtTCPOFODrop, 2);
        // In order: always taken, and it joins the ranges held.
        s.rx(&seg(false, at(0), 100, 0x10, 1));
        assert_eq!(s.list[0].1.accept.next, Some(at(6)));
        assert_eq!(s.list[0].1.accept.ranges.len(), ASSEMBLER_RANGES - 2);
    }

    /// The model against smoltcp itself: a listening socket (tuned as the
    /// sink tunes it) on a device that feeds [`SegStats`] as
    /// `QueueDevice` does, random segments in and out of order, inside,
    /// across and beyond the window, the application reading now and then.
    /// Every ACK smoltcp sends must acknowledge exactly the byte the model
    /// expects next, and every SACK block must be one of the model's
    /// out-of-order ranges; the discards must all have happened.
    mod against_smoltcp {
        use super::super::*;
        use smoltcp::iface::SocketSet;
        use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
        use smoltcp::socket::tcp;
        use smoltcp::wire::{
            ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
            EthernetRepr, IpAddress, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr,
            TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
        };
        use std::collections::VecDeque;

        const US: [u8; 6] = [2, 0, 0, 0, 0, 1];
        const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];
        const US_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
        const PEER_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

        struct Dev {
            rx: VecDeque<Vec<u8>>,
            tx: Vec<Vec<u8>>,
            segs: SegStats,
            now: Instant,
        }
        struct Rx(Vec<u8>);
        struct Tx<'a>(&'a mut Vec<Vec<u8>>, &'a mut SegStats, Instant);
        impl phy::RxToken for Rx {
            fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
                f(&self.0)
            }
        }
        impl phy::TxToken for Tx<'_> {
            fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
                let mut b = vec![0; len];
                let r = f(&mut b);
                self.1.tx(&b, self.2);
                self.0.push(b);
                r
            }
        }
        impl phy::Device for Dev {
            type RxToken<'a> = Rx;
            type TxToken<'a> = Tx<'a>;
            fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
                let f = self.rx.pop_front()?;
                self.segs.rx(&f);
                Some((Rx(f), Tx(&mut self.tx, &mut self.segs, self.now)))
            }
            fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
                Some(Tx(&mut self.tx, &mut self.segs, self.now))
            }
            fn capabilities(&self) -> DeviceCapabilities {
                let mut c = DeviceCapabilities::default();
                c.medium = Medium::Ethernet;
                c.max_transmission_unit = 1514;
                c.checksum = ChecksumCapabilities::ignored();
                c
            }
        }

        fn ether(proto: EthernetProtocol, body: &[u8]) -> Vec<u8> {
            let mut f = vec![0; 14 + body.len()];
            let e = EthernetRepr {
                src_addr: EthernetAddress(PEER),
                dst_addr: EthernetAddress(US),
                ethertype: proto,
            };
            e.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
            f[14..].copy_from_slice(body);
            f
        }

        fn tcp_frame(t: &TcpRepr<'_>) -> Vec<u8> {
            let caps = ChecksumCapabilities::ignored();
            let ip = Ipv4Repr {
                src_addr: PEER_IP,
                dst_addr: US_IP,
                next_header: IpProtocol::Tcp,
                payload_len: t.buffer_len(),
                hop_limit: 64,
            };
            let mut b = vec![0; 20 + t.buffer_len()];
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]), &caps);
            t.emit(
                &mut TcpPacket::new_unchecked(&mut b[20..]),
                &IpAddress::Ipv4(PEER_IP),
                &IpAddress::Ipv4(US_IP),
                &caps,
            );
            ether(EthernetProtocol::Ipv4, &b)
        }

        /// The peer's segment from port 5000 to 9000: no flags, no options.
        fn seg(seq: u32, ack: Option<u32>, payload: &[u8]) -> TcpRepr<'_> {
            TcpRepr {
                src_port: 5000,
                dst_port: 9000,
                control: TcpControl::None,
                seq_number: TcpSeqNumber(seq as i32),
                ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
                window_len: 4096,
                window_scale: None,
                max_seg_size: None,
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload,
            }
        }

        fn data(seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
            tcp_frame(&seg(seq, Some(ack), payload))
        }

        /// ACK number and SACK blocks of a TCP frame smoltcp sent.
        fn ack_of(f: &[u8]) -> Option<(u32, Vec<(u32, u32)>)> {
            let ip = Ipv4Packet::new_checked(f.get(14..)?).ok()?;
            let p = TcpPacket::new_checked(ip.payload()).ok()?;
            let caps = ChecksumCapabilities::ignored();
            let t = TcpRepr::parse(
                &p,
                &IpAddress::Ipv4(US_IP),
                &IpAddress::Ipv4(PEER_IP),
                &caps,
            )
            .ok()?;
            let sack = t.sack_ranges.iter().flatten().copied().collect();
            Some((t.ack_number?.0 as u32, sack))
        }

        /// One run: a socket with a `rx_buf`-byte ring, `steps` segments.
        fn run(rx_buf: usize, seed: u64, steps: usize) -> SegCounters {
            let t0 = Instant::from_millis(0);
            let mut dev = Dev {
                rx: VecDeque::new(),
                tx: Vec::new(),
                segs: SegStats::new(),
                now: t0,
            };
            let mut iface =
                crate::sink::interface(&mut dev, US, Ipv4Cidr::new(US_IP, 24), None, seed, t0);
            let mut mem = vec![0u8; rx_buf + 4096];
            let (rx, tx) = mem.split_at_mut(rx_buf);
            let mut sock = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
            crate::sink::tune(&mut sock, tcp::CongestionControl::Reno);
            sock.listen(9000).unwrap();
            let mut sockets = SocketSet::new(Vec::new());
            let h = sockets.add(sock);
            let mut arp = vec![0; 28];
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(PEER),
                source_protocol_addr: PEER_IP,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: US_IP,
            }
            .emit(&mut ArpPacket::new_unchecked(&mut arp[..]));
            dev.rx.push_back(ether(EthernetProtocol::Arp, &arp));
            let isn = (seed as u32).wrapping_mul(2_654_435_761);
            dev.rx.push_back(tcp_frame(&TcpRepr {
                control: TcpControl::Syn,
                window_scale: Some(7),
                max_seg_size: Some(1460),
                sack_permitted: true,
                ..seg(isn, None, &[])
            }));
            let mut now = t0;
            let mut poll = |dev: &mut Dev, sockets: &mut SocketSet<'_>, now: &mut Instant| {
                // 2 ms a round: the 1 ms delayed ACK is always due.
                *now += Duration::from_millis(2);
                dev.now = *now;
                iface.poll(*now, dev, sockets);
            };
            poll(&mut dev, &mut sockets, &mut now);
            let our_isn = dev
                .tx
                .iter()
                .find_map(|f| {
                    let ip = Ipv4Packet::new_checked(f.get(14..)?).ok()?;
                    let p = TcpPacket::new_checked(ip.payload()).ok()?;
                    p.syn().then(|| p.seq_number().0 as u32)
                })
                .expect("a SYN-ACK");
            let ack = our_isn.wrapping_add(1);
            let first = isn.wrapping_add(1);
            dev.rx.push_back(data(first, ack, &[]));
            // One byte in order, so smoltcp advertises its window again:
            // it takes the SYN-ACK's unscaled window as scaled (a right
            // edge up to 2^shift times too far), and writing there trips
            // its own debug assertion. A peer that honours the SYN-ACK's
            // window never gets there.
            dev.rx.push_back(data(first, ack, &[0]));
            poll(&mut dev, &mut sockets, &mut now);
            poll(&mut dev, &mut sockets, &mut now); // the delayed ACK
            let mut rng = seed | 1;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let payload = vec![0xA5u8; 1460];
            for step in 0..steps {
                let c = &dev.segs.list[0].1.accept;
                let base = c.next.unwrap();
                let r = next();
                // Mostly around the window, sometimes far beyond it.
                let span = if r % 8 == 0 {
                    4 * rx_buf
                } else {
                    rx_buf + rx_buf / 4
                };
                let off = if r % 5 == 0 {
                    0
                } else {
                    (next() % span as u64) as u32
                };
                // Short segments now and then: more ranges for the assembler.
                let len = 1 + (next() % if r % 3 == 0 { 1460 } else { 100 }) as usize;
                dev.tx.clear();
                dev.rx
                    .push_back(data(base.wrapping_add(off), ack, &payload[..len]));
                poll(&mut dev, &mut sockets, &mut now);
                if next() % 32 == 0 {
                    // The application reads: the window opens again.
                    let s = sockets.get_mut::<tcp::Socket>(h);
                    let n = (next() % 2048) as usize;
                    let _ = s.recv(|b| {
                        let k = n.min(b.len());
                        (k, ())
                    });
                    poll(&mut dev, &mut sockets, &mut now);
                }
                let c = &dev.segs.list[0].1.accept;
                for f in &dev.tx {
                    let Some((a, sack)) = ack_of(f) else {
                        continue;
                    };
                    assert_eq!(
                        a,
                        c.next.unwrap(),
                        "step {step}: ACK vs the model's next byte"
                    );
                    for b in sack {
                        assert!(
                            c.ranges.contains(&b),
                            "step {step}: SACK {b:?} not among the model's ranges {:?}",
                            c.ranges
                        );
                    }
                }
            }
            *dev.segs.total()
        }

        #[test]
        fn acks_and_sacks_agree_with_the_model() {
            let mut all = SegCounters::default();
            for (rx_buf, seed) in [(16 << 10, 3), (64 << 10, 1), (256 << 10, 2), (1 << 20, 4)] {
                let t = run(rx_buf, seed, 3000);
                assert!(t.InOverWindowSegs > 0, "{rx_buf}: {t:?}");
                all.add(&t);
            }
            assert!(all.TcpExtTCPOFODrop > 0, "{all:?}");
            assert!(all.TcpExtTCPZeroWindowDrop > 0, "{all:?}");
        }
    }

    #[test]
    fn anything_else_is_ignored_without_panics() {
        let mut s = SegStats::new();
        let f = seg(false, 1, 100, 0x10, 1);
        for cut in 0..f.len() {
            s.rx(&f[..cut]);
            s.tx(&f[..cut], Instant::from_millis(0));
        }
        let mut s = SegStats::new();
        let mut udp = f.clone();
        udp[14 + 9] = 17;
        s.rx(&udp);
        s.tx(&udp, Instant::from_millis(0));
        assert_eq!(*s.total(), SegCounters::default());
    }
}
