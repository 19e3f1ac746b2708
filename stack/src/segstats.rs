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

use smoltcp::time::{Duration, Instant};
use std::collections::HashMap;

/// Holes tracked per connection.
pub const MAX_HOLES: usize = 32;
/// Connections tracked per device; segments of further ones are counted in
/// the totals only.
pub const MAX_CONNS: usize = 4096;
/// Silence before a retransmission that makes it a timeout.
pub const TIMEOUT_GAP: Duration = Duration::from_millis(200);

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
    syn: bool,
    window: u16,
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
    let (syn, fin) = (flags & 0x02 != 0, flags & 0x01 != 0);
    let payload = (total - ihl - doff) as u32;
    Some(Seg {
        src_ip: ip.get(12..16)?.try_into().ok()?,
        dst_ip: ip.get(16..20)?.try_into().ok()?,
        src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        len: payload + syn as u32 + fin as u32,
        syn,
        window: u16::from_be_bytes([*tcp.get(14)?, *tcp.get(15)?]),
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
        let key = ConnKey {
            local_port: s.dst_port,
            remote_ip: s.src_ip,
            remote_port: s.src_port,
        };
        let mut d = SegCounters {
            TcpInSegs: 1,
            ..SegCounters::default()
        };
        if let Some(c) = self.conn(key) {
            Self::rx_seq(c, &s, &mut d);
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
        let key = ConnKey {
            local_port: s.src_port,
            remote_ip: s.dst_ip,
            remote_port: s.dst_port,
        };
        let mut d = SegCounters {
            TcpOutSegs: 1,
            ..SegCounters::default()
        };
        if let Some(c) = self.conn(key) {
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
