//! The engine: connection table, receive path (in order, out of order,
//! trimming), ACK policy, the small send path, timers.
//!
//! Sequence numbers of received data are turned into 64-bit stream offsets
//! (0 = the first byte after the SYN) as soon as a segment is accepted, so
//! the out-of-order queue and the window never deal with wrap-around.

use super::ret::{drain_ring, lock, Body, Refill, Shared, CREDIT_BITS, CREDIT_MASK, GEN_MASK};
use super::wire::{self, Headers, Out, Reject};
use super::{ConnId, ReturnMode, ZcChunk, ZcConfig, ZcEvent, ZcReturner, ZcStats};
use driver::{Buf, BufReturn, Csum, OwnedPacket, Seg};
use packet::tcp::flags as F;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// RFC 6298 bounds; 200 ms minimum as Linux uses.
const RTO_INIT: Duration = Duration::from_secs(1);
const RTO_MIN: Duration = Duration::from_millis(200);
const RTO_MAX: Duration = Duration::from_secs(60);
/// Timeouts in a row before a connection is given up.
const MAX_RETRIES: u32 = 8;
const MAX_SYNACK_RETRIES: u32 = 5;
/// Segments in flight at most (our only congestion control).
const FLIGHT_SEGMENTS: usize = 10;
/// How long FIN-WAIT-2 waits for the peer's FIN.
const FIN_WAIT2_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames queued for `transmit` at most.
const TXQ_LIMIT: usize = 8192;
/// Most recent out-of-order arrivals remembered for SACK block order.
const SACK_RECENT: usize = 4;

/// `a < b` in sequence space.
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    SynRcvd,
    Established,
    CloseWait,
    LastAck,
    FinWait1,
    FinWait2,
    Closing,
    TimeWait,
}

/// Payload kept by the out-of-order queue: `len` bytes at `off` of `body`.
struct Piece {
    body: Body,
    off: u32,
    len: u32,
}

struct Conn {
    id: ConnId,
    state: State,
    local_port: u16,
    remote_ip: [u8; 4],
    remote_port: u16,
    remote_mac: [u8; 6],

    // Receive side, in stream offsets.
    irs: u32,
    rcv_nxt: u64,
    /// Right edge of the window we advertised (never moves left).
    rcv_right: u64,
    /// Last window we advertised (scaled value in the header).
    last_adv: u32,
    ooo: BTreeMap<u64, Piece>,
    ooo_bytes: u64,
    /// Offsets of the latest out-of-order arrivals, newest first.
    recent: VecDeque<u64>,
    fin_at: Option<u64>,
    fin_rcvd: bool,
    /// Bytes delivered (events queued or taken) and returned.
    delivered: u64,
    returned: u64,
    /// The credit word's byte count last seen.
    credit_seen: u64,
    ack_now: bool,
    /// In `round_acks`: the end of the round sends an ACK if one is
    /// still owed then (two full segments unacknowledged).
    ack_round: bool,
    ack_due: Option<Instant>,
    /// Full-sized segments received since our last ACK.
    full_unacked: usize,
    /// Our window shift (0 without scaling) and the peer's.
    ws_rcv: u8,
    ws_snd: u8,
    /// Both sides sent the window scale option.
    ws_ok: bool,
    sack_ok: bool,
    ts_ok: bool,
    ts_recent: u32,
    mss_snd: usize,

    // Send side, in sequence numbers.
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// Highest sequence sent so far (retransmissions stay below it).
    snd_max: u32,
    snd_wnd: usize,
    /// Unacknowledged and unsent bytes; the first `sent` were sent.
    snd_buf: VecDeque<u8>,
    sent: usize,
    fin_queued: bool,
    fin_sent: bool,
    rto: Duration,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto_at: Option<Instant>,
    retries: u32,
    /// After a timeout, one segment in flight until an ACK comes (RFC
    /// 5681's loss window, our only congestion response).
    loss_window: bool,
    /// A segment being timed: (sequence after it, when sent).
    timing: Option<(u32, Instant)>,
    /// End of TIME-WAIT or of the FIN-WAIT-2 wait.
    linger_at: Option<Instant>,
}

impl Conn {
    /// Our ACK number.
    fn ack_seq(&self) -> u32 {
        self.irs
            .wrapping_add(1)
            .wrapping_add(self.rcv_nxt as u32)
            .wrapping_add(self.fin_rcvd as u32)
    }

    /// Stream offset of sequence number `seq` (near `rcv_nxt`).
    fn offset(&self, seq: u32) -> i64 {
        let base = self.irs.wrapping_add(1).wrapping_add(self.rcv_nxt as u32);
        self.rcv_nxt as i64 + seq.wrapping_sub(base) as i32 as i64
    }

    fn seq_of(&self, off: u64) -> u32 {
        self.irs.wrapping_add(1).wrapping_add(off as u32)
    }

    fn held(&self) -> u64 {
        self.delivered - self.returned
    }

    fn key(&self) -> Key {
        (self.remote_ip, self.remote_port, self.local_port)
    }

    /// The run of contiguous queued pieces holding offset `o`, if any.
    fn ooo_range_at(&self, o: u64) -> Option<(u64, u64)> {
        let (&k, p) = self.ooo.range(..=o).next_back()?;
        let (mut l, mut r) = (k, k + p.len as u64);
        if o >= r {
            return None;
        }
        for (&k, p) in self.ooo.range(..l).rev() {
            if k + p.len as u64 != l {
                break;
            }
            l = k;
        }
        for (&k, p) in self.ooo.range(r..) {
            if k != r {
                break;
            }
            r += p.len as u64;
        }
        Some((l, r))
    }

    /// SACK blocks as stream offsets into `out`: the runs of the
    /// out-of-order queue, those holding the latest arrivals first
    /// (RFC 2018 4), then the others from the left. Returns how many.
    fn sack_blocks(&self, out: &mut [(u64, u64); 4]) -> usize {
        if self.ooo.is_empty() {
            // The common case: no hole, no block (whatever `recent` still
            // remembers).
            return 0;
        }
        let mut n = 0;
        let mut add = |r: (u64, u64), n: &mut usize| {
            if *n < out.len() && !out[..*n].contains(&r) {
                out[*n] = r;
                *n += 1;
            }
        };
        for &o in &self.recent {
            if let Some(r) = self.ooo_range_at(o) {
                add(r, &mut n);
            }
        }
        let mut run: Option<(u64, u64)> = None;
        for (&k, p) in &self.ooo {
            if n >= 4 {
                break;
            }
            match &mut run {
                Some(r) if r.1 == k => r.1 += p.len as u64,
                _ => {
                    if let Some(r) = run.take() {
                        add(r, &mut n);
                    }
                    run = Some((k, k + p.len as u64));
                }
            }
        }
        if let Some(r) = run {
            add(r, &mut n);
        }
        n
    }
}

/// (remote IP, remote port, local port)
type Key = ([u8; 4], u16, u16);

/// The zero-copy receive engine of one RX queue. See the [module
/// documentation](super).
pub struct ZcStack {
    cfg: ZcConfig,
    mss: usize,
    /// Our window shift when the peer scales.
    ws: u8,
    slots: Vec<Option<Box<Conn>>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    lookup: HashMap<Key, u32>,
    /// The last key `lookup` found and its slot: a run of segments of one
    /// connection hashes once.
    last_key: Option<(Key, u32)>,
    events: VecDeque<ZcEvent>,
    txq: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    stats: ZcStats,
    shared: Arc<Shared>,
    /// Consumer ends of the returners' refill rings.
    pub(super) rings: Vec<rtrb::Consumer<Refill>>,
    /// References to `shared` that came home with pages through the
    /// rings, handed to new chunks (no reference-count update per chunk).
    pub(super) spare_refs: Vec<Arc<Shared>>,
    /// Pages freed by the engine itself, recycled at the next `reclaim`.
    loose: Vec<Buf>,
    /// Pages out: in the engine's queues, with the application, or
    /// returned and not yet reclaimed.
    pages_out: usize,
    pool_low: bool,
    hasher: RandomState,
    start: Instant,
    ip_ident: u16,
    scratch: Vec<u8>,
    /// Slots owed an ACK at the end of the round (`ZcConfig::ack_per_round`).
    round_acks: Vec<u32>,
    /// The latest time `rx` or `poll` was given.
    now: Instant,
    /// Where pages go once the engine is dropped (see
    /// [`ZcStack::set_foreign_return`]).
    foreign: Option<Arc<dyn BufReturn>>,
}

impl ZcStack {
    /// An engine with no connection yet, listening on `cfg.listen`.
    pub fn new(cfg: ZcConfig) -> Result<Self, String> {
        cfg.validate()?;
        let mut ws = 0u8;
        while ws < 14 && (cfg.rcv_buf >> ws) > 0xFFFF {
            ws += 1;
        }
        let n = cfg.max_conns;
        Ok(ZcStack {
            mss: cfg.mtu - 40,
            ws,
            slots: (0..n).map(|_| None).collect(),
            gens: vec![0; n],
            free: (0..n as u32).rev().collect(),
            lookup: HashMap::new(),
            last_key: None,
            events: VecDeque::new(),
            txq: VecDeque::new(),
            spare: Vec::new(),
            stats: ZcStats::default(),
            shared: Shared::new(cfg.max_pages, n),
            rings: Vec::new(),
            spare_refs: Vec::new(),
            loose: Vec::new(),
            pages_out: 0,
            pool_low: false,
            hasher: RandomState::new(),
            start: Instant::now(),
            ip_ident: 0,
            scratch: Vec::new(),
            round_acks: Vec::new(),
            now: Instant::now(),
            foreign: None,
            cfg,
        })
    }

    /// The page pool's foreign return path: when the engine is dropped,
    /// the pages it still holds and every page returned later (chunks that
    /// outlive it) go there instead of being lost. [`super::ZcQueue`] sets
    /// it; without it, call [`ZcStack::release_all`] before dropping the
    /// engine and return every chunk before that.
    pub fn set_foreign_return(&mut self, ret: Arc<dyn BufReturn>) {
        self.foreign = Some(ret);
    }

    pub fn config(&self) -> &ZcConfig {
        &self.cfg
    }

    /// Counters (see [`ZcStats`]).
    pub fn stats(&self) -> &ZcStats {
        &self.stats
    }

    /// Connections in the table (handshaking, open, closing, TIME-WAIT).
    pub fn open_connections(&self) -> usize {
        self.lookup.len()
    }

    /// Pages out (see [`ZcConfig::max_pages`]).
    pub fn pages_out(&self) -> usize {
        self.pages_out
    }

    /// Payload bytes the application holds (delivered, not returned) on
    /// `conn`, as last reclaimed.
    pub fn held_bytes(&self, conn: ConnId) -> Option<u64> {
        self.conn(conn).map(|c| c.held())
    }

    /// The window `conn` last advertised, in bytes.
    pub fn advertised_window(&self, conn: ConnId) -> Option<u64> {
        self.conn(conn).map(|c| (c.last_adv as u64) << c.ws_rcv)
    }

    /// When the glue says the page pool is short: in-order and
    /// out-of-order payload is then copied to the heap and its page left
    /// for the caller to recycle at once.
    pub fn set_pool_low(&mut self, low: bool) {
        self.pool_low = low;
    }

    /// The next event, in order. `Data` chunks count against their
    /// connection's window from the moment they are queued.
    pub fn next_event(&mut self) -> Option<ZcEvent> {
        self.events.pop_front()
    }

    /// Frames waiting for [`ZcStack::transmit`].
    pub fn tx_pending(&self) -> usize {
        self.txq.len()
    }

    /// Hands the queued frames (ACKs, SYN-ACKs, data, FIN, RST, ARP
    /// replies) to `f` in order; `f` returns false when the device cannot
    /// take one now: it stays queued, with those after it, for a later
    /// call.
    pub fn transmit(&mut self, mut f: impl FnMut(&[u8]) -> bool) {
        while let Some(frame) = self.txq.front() {
            if !f(frame) {
                break;
            }
            if let Some(v) = self.txq.pop_front() {
                self.spare.push(v);
            }
        }
    }

    /// A return handle for the application's thread; `batch` is clamped
    /// to 1..=[`super::MAX_RETURN_BATCH`].
    pub fn returner(&self, mode: ReturnMode, batch: usize) -> ZcReturner {
        ZcReturner::new(self.shared.clone(), mode, batch)
    }

    /// Owner side of the returns: every page the application (or the
    /// engine itself) gave back goes to `recycle` (the pool's owner fast
    /// path), and the returned byte counts reach their connections. Call
    /// it every round, before the RX ring refills.
    pub fn reclaim(&mut self, mut recycle: impl FnMut(Buf)) {
        let mut n = 0;
        for b in self.loose.drain(..) {
            recycle(b);
            n += 1;
        }
        self.shared.adopt_rings(&mut self.rings);
        let refs = &mut self.spare_refs;
        for r in &mut self.rings {
            n += drain_ring(r, |(b, a)| {
                recycle(b);
                refs.push(a);
            });
        }
        // The list's lock only when something was put on it.
        if self.shared.take_locked_flag() {
            let locked = std::mem::take(&mut *lock(&self.shared.locked));
            for b in locked {
                recycle(b);
                n += 1;
            }
        }
        self.pages_out = self.pages_out.saturating_sub(n);
        self.sync_credits();
    }

    /// For shutdown: every page the engine holds (out-of-order queues,
    /// undelivered chunks, returns not yet reclaimed) goes to `recycle`,
    /// and every connection is forgotten without a frame sent. Pages the
    /// application still holds come back when it returns them.
    pub fn release_all(&mut self, mut recycle: impl FnMut(Buf)) {
        while let Some(ev) = self.events.pop_front() {
            if let ZcEvent::Data { mut chunk, .. } = ev {
                if let Some(b) = chunk.take_page() {
                    recycle(b);
                    self.pages_out = self.pages_out.saturating_sub(1);
                }
            }
        }
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.free_slot(slot as u32);
            }
        }
        self.reclaim(recycle);
    }

    /// Queues `data` on `conn` (small amounts: a control channel) and
    /// sends what the windows allow; returns the bytes accepted (0 when
    /// the send buffer is full, after `close`, or on an unknown `conn`).
    pub fn send(&mut self, conn: ConnId, data: &[u8]) -> usize {
        let room = self.cfg.snd_buf;
        let Some(c) = self.conn_mut(conn) else {
            return 0;
        };
        if !matches!(c.state, State::Established | State::CloseWait) || c.fin_queued {
            return 0;
        }
        let n = data.len().min(room.saturating_sub(c.snd_buf.len()));
        c.snd_buf.extend(&data[..n]);
        self.output(conn.slot, self.now, false);
        n
    }

    /// Active or passive close: FIN after the queued data. `Closed` follows
    /// once the peer acknowledged it (and, actively closed, sent its FIN).
    pub fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        if !matches!(c.state, State::Established | State::CloseWait) {
            return;
        }
        c.fin_queued = true;
        self.output(conn.slot, self.now, false);
    }

    /// Sends RST and forgets `conn` at once; queues `Closed { reset: true }`.
    pub fn abort(&mut self, conn: ConnId) {
        let Some(c) = self.conn(conn) else {
            return;
        };
        let o = Out {
            dst_mac: c.remote_mac,
            dst_ip: c.remote_ip,
            src_port: c.local_port,
            dst_port: c.remote_port,
            seq: c.snd_nxt,
            ack: c.ack_seq(),
            flags: F::RST | F::ACK,
            ..Out::default()
        };
        self.queue_rst(&o);
        closed(&mut self.events, &mut self.stats, conn, true);
        self.free_slot(conn.slot);
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        match self.slots.get(id.slot as usize) {
            Some(Some(c)) if c.id == id => Some(c),
            _ => None,
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        match self.slots.get_mut(id.slot as usize) {
            Some(Some(c)) if c.id == id => Some(c),
            _ => None,
        }
    }

    /// Reads what the returners credited to each connection.
    /// Only after a returner raised the shared flag: a round without
    /// returns reads no credit word.
    fn sync_credits(&mut self) {
        if !self.shared.take_credited_flag() {
            return;
        }
        for c in self.slots.iter_mut().flatten() {
            let Some(w) = self.shared.credits.get(c.id.slot as usize) else {
                continue;
            };
            let cur = w.load(Ordering::Acquire);
            if cur >> CREDIT_BITS != (c.id.gen & GEN_MASK) as u64 {
                continue;
            }
            let delta = (cur.wrapping_sub(c.credit_seen)) & CREDIT_MASK;
            c.credit_seen = cur & CREDIT_MASK;
            c.returned = (c.returned + delta).min(c.delivered);
        }
    }

    // ---- receive -------------------------------------------------------

    /// One received frame. Takes out of `pkt.segs` the payload pages it
    /// keeps (new in-window data); everything it leaves in `pkt` (the
    /// header slot, pages of duplicates, copies, non-TCP or dropped frames)
    /// is the caller's to recycle on the owner fast path.
    pub fn rx(&mut self, pkt: &mut OwnedPacket, now: Instant) {
        self.stats.rx_frames += 1;
        self.now = self.now.max(now);
        if pkt.segs.iter().any(|s| s.len as usize > s.buf.capacity()) {
            self.stats.malformed += 1;
            return;
        }
        // The frame is the header slot's bytes (when the device split it)
        // followed by the pages'. The headers may lie in either or across
        // both (split modes `on`, `off`, `always`, HBO): they are gathered
        // into one small buffer and read there.
        let in_hdr = match &pkt.hdr {
            Some(h) => (pkt.hdr_len as usize).min(h.capacity()),
            None => 0,
        };
        // With header split the device put every header in the slot: read
        // them there (what gathering would copy first anyway); anything
        // else (headers across slot and page, ARP, ICMP, errors) is parsed
        // again from the gathered copy.
        let slot = match &pkt.hdr {
            Some(hd) if in_hdr > 0 => hd.as_slice(in_hdr),
            _ => &[][..],
        };
        let mut buf: [u8; HEADERS_MAX];
        let (hb, parsed) = match wire::parse(slot, pkt.len as usize, self.cfg.mac, self.cfg.ip) {
            Ok(h) if h.hdr_len <= slot.len() => (slot, Ok(h)),
            _ => {
                buf = [0u8; HEADERS_MAX];
                let n = gather(pkt, in_hdr, &mut buf);
                let hb = &buf[..n];
                (
                    hb,
                    wire::parse(hb, pkt.len as usize, self.cfg.mac, self.cfg.ip),
                )
            }
        };
        let h = match parsed {
            Ok(h) => h,
            Err(Reject::Arp) => {
                let mut out = self.spare.pop().unwrap_or_default();
                if self.cfg.answer_arp && wire::arp_reply(hb, self.cfg.mac, self.cfg.ip, &mut out) {
                    self.stats.arp_frames += 1;
                    self.stats.arp_replies += 1;
                    self.queue_frame(out);
                } else {
                    self.spare.push(out);
                    self.stats.arp_ignored += 1;
                }
                return;
            }
            Err(Reject::Icmp) => {
                let mut frame = self.spare.pop().unwrap_or_default();
                let mut out = self.spare.pop().unwrap_or_default();
                whole_frame(pkt, in_hdr, &mut frame);
                if wire::icmp_echo_reply(&frame, self.cfg.mac, self.cfg.ip, &mut out) {
                    self.stats.icmp_echo_replies += 1;
                    self.queue_frame(out);
                } else {
                    self.spare.push(out);
                    self.stats.icmp_ignored += 1;
                }
                self.spare.push(frame);
                return;
            }
            Err(e) => {
                self.count_reject(e);
                return;
            }
        };
        // Payload that came in the header slot (split `always`, HBO) is
        // copied out of it; the rest starts `first_off` into the pages.
        let lay = Lay {
            first_off: h.hdr_len.saturating_sub(in_hdr),
            head: (h.hdr_len.min(in_hdr), in_hdr.min(h.hdr_len + h.payload_len)),
        };
        let in_pages: usize = pkt.segs.iter().map(|s| s.len as usize).sum();
        if in_hdr + in_pages < h.hdr_len + h.payload_len {
            self.stats.malformed += 1;
            return;
        }
        let head = lay.head_bytes(pkt);
        let ip_ok = pkt.ip_csum == Csum::Good || wire::ipv4_header_ok(hb);
        let tcp_ok =
            pkt.l4_csum == Csum::Good || tcp_checksum_ok(&h, hb, head, &pkt.segs, lay.first_off);
        if !(ip_ok && tcp_ok) {
            self.stats.bad_checksum += 1;
            return;
        }
        self.segment(&h, pkt, lay, now);
    }

    fn count_reject(&mut self, e: Reject) {
        let s = &mut self.stats;
        match e {
            Reject::Malformed => s.malformed += 1,
            Reject::BadOptions => s.bad_options += 1,
            Reject::NotForUs => s.not_for_us += 1,
            Reject::NotTcp => s.not_tcp += 1,
            Reject::Fragment => s.ip_fragment += 1,
            Reject::Arp => s.arp_ignored += 1,
            Reject::Icmp => s.icmp_ignored += 1,
        }
    }

    fn segment(&mut self, h: &Headers, pkt: &mut OwnedPacket, lay: Lay, now: Instant) {
        let key = (h.src_ip, h.src_port, h.dst_port);
        let slot = match self.last_key {
            Some((k, slot)) if k == key => Some(slot),
            _ => {
                let slot = self.lookup.get(&key).copied();
                self.last_key = slot.map(|s| (key, s));
                slot
            }
        };
        let Some(slot) = slot else {
            self.no_conn(h, now);
            return;
        };
        let slot = slot as usize;
        let Some(c) = self.slots[slot].as_mut() else {
            self.stats.no_connection += 1;
            return;
        };
        let id = c.id;
        if c.state == State::SynRcvd {
            if h.flags & F::RST != 0 {
                if h.seq == c.irs.wrapping_add(1) {
                    self.stats.tcp_segments += 1;
                    self.stats.resets_received += 1;
                    self.free_slot(id.slot);
                } else {
                    self.stats.out_of_window += 1;
                }
                return;
            }
            if h.flags & F::SYN != 0 {
                // The peer did not get our SYN-ACK.
                if h.seq == c.irs {
                    self.stats.tcp_segments += 1;
                    self.stats.retransmits_sent += 1;
                    self.send_synack(slot, now);
                } else {
                    self.stats.bad_state += 1;
                }
                return;
            }
            if h.flags & F::ACK == 0 {
                self.stats.bad_state += 1;
                return;
            }
            if h.ack != c.iss.wrapping_add(1) {
                self.stats.bad_state += 1;
                let (seq, ack) = (h.ack, 0);
                self.send_rst_to(h, seq, ack, false);
                return;
            }
            c.state = State::Established;
            c.snd_una = h.ack;
            c.retries = 0;
            c.rto_at = None;
            if let Some((end, t)) = c.timing.take() {
                if end == h.ack {
                    rtt_sample(c, now.saturating_duration_since(t));
                }
            }
            let (local_port, remote) = (c.local_port, (c.remote_ip, c.remote_port));
            self.stats.conns_accepted += 1;
            self.events.push_back(ZcEvent::Accepted {
                conn: id,
                local_port,
                remote,
            });
        }
        self.synchronized(slot, h, pkt, lay, now);
    }

    /// A segment for no connection: a SYN to a listening port opens one.
    fn no_conn(&mut self, h: &Headers, now: Instant) {
        if h.flags & F::RST != 0 {
            self.stats.no_connection += 1;
            return;
        }
        if h.flags & (F::SYN | F::ACK | F::FIN) != F::SYN {
            self.stats.no_connection += 1;
            if h.flags & F::ACK != 0 {
                self.send_rst_to(h, h.ack, 0, false);
            } else {
                let len = h.payload_len as u32 + (h.flags & F::FIN != 0) as u32;
                self.send_rst_to(h, 0, h.seq.wrapping_add(len), true);
            }
            return;
        }
        if !self.cfg.listen.contains(&h.dst_port) {
            self.stats.no_listener += 1;
            self.send_rst_to(h, 0, h.seq.wrapping_add(1), true);
            return;
        }
        let Some(slot) = self.free.pop() else {
            self.stats.syn_refused += 1;
            return;
        };
        self.stats.tcp_segments += 1;
        let gen = self.gens[slot as usize];
        let id = ConnId { slot, gen };
        let key = (h.src_ip, h.src_port, h.dst_port);
        let t = now.saturating_duration_since(self.start).as_nanos() as u64;
        let iss = self.hasher.hash_one((key, t)) as u32;
        let ws_rcv = if h.opts.wscale.is_some() { self.ws } else { 0 };
        let ts = h.opts.ts;
        let c = Conn {
            id,
            state: State::SynRcvd,
            local_port: h.dst_port,
            remote_ip: h.src_ip,
            remote_port: h.src_port,
            remote_mac: h.src_mac,
            irs: h.seq,
            rcv_nxt: 0,
            rcv_right: 0,
            last_adv: 0,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            recent: VecDeque::new(),
            fin_at: None,
            fin_rcvd: false,
            delivered: 0,
            returned: 0,
            credit_seen: 0,
            ack_now: false,
            ack_round: false,
            ack_due: None,
            full_unacked: 0,
            ws_rcv,
            ws_ok: h.opts.wscale.is_some(),
            ws_snd: h.opts.wscale.unwrap_or(0),
            sack_ok: h.opts.sack_perm,
            ts_ok: ts.is_some(),
            ts_recent: ts.map_or(0, |t| t.0),
            mss_snd: h.opts.mss.map_or(536, |m| m as usize).clamp(64, self.mss),
            iss,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            snd_max: iss.wrapping_add(1),
            snd_wnd: h.window as usize,
            snd_buf: VecDeque::new(),
            sent: 0,
            fin_queued: false,
            fin_sent: false,
            rto: RTO_INIT,
            srtt: None,
            rttvar: Duration::ZERO,
            rto_at: None,
            retries: 0,
            loss_window: false,
            timing: Some((iss.wrapping_add(1), now)),
            linger_at: None,
        };
        self.shared.credits[slot as usize]
            .store(((gen & GEN_MASK) as u64) << CREDIT_BITS, Ordering::Release);
        self.lookup.insert(key, slot);
        self.slots[slot as usize] = Some(Box::new(c));
        self.send_synack(slot as usize, now);
    }

    /// Processing in a synchronized state (RFC 9293 3.10.7.4 order: the
    /// sequence number, RST, SYN, ACK, data, FIN).
    fn synchronized(
        &mut self,
        slot: usize,
        h: &Headers,
        pkt: &mut OwnedPacket,
        lay: Lay,
        now: Instant,
    ) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let id = c.id;
        let fin = h.flags & F::FIN != 0;
        let seg_len = h.payload_len as u64 + fin as u64;
        let off = c.offset(h.seq);
        let end = off + seg_len as i64;
        // A FIN we consumed takes a sequence number after the data.
        let nxt = c.rcv_nxt as i64 + c.fin_rcvd as i64;
        let right = c.rcv_right as i64 + c.fin_rcvd as i64;
        let acceptable = if seg_len == 0 {
            if right == nxt {
                off == nxt
            } else {
                nxt <= off && off < right
            }
        } else if right == nxt {
            false
        } else {
            (nxt <= off && off < right) || (nxt < end && end <= right) || (off < nxt && end > right)
        };
        // A retransmission of something we already have, whole (a FIN we
        // consumed included).
        let old = seg_len > 0 && end <= nxt;
        if !acceptable && !old {
            self.stats.out_of_window += 1;
            if h.flags & F::RST == 0 {
                c.ack_now = true;
                self.flush_ack(slot, now);
            }
            return;
        }
        if h.flags & F::RST != 0 {
            if off == nxt {
                self.stats.tcp_segments += 1;
                self.stats.resets_received += 1;
                closed(&mut self.events, &mut self.stats, id, true);
                self.free_slot(id.slot);
            } else {
                // RFC 5961: a challenge ACK.
                self.stats.bad_state += 1;
                c.ack_now = true;
                self.flush_ack(slot, now);
            }
            return;
        }
        if h.flags & F::SYN != 0 || h.flags & F::ACK == 0 || seq_lt(c.snd_max, h.ack) {
            // A SYN in a synchronized state (challenge ACK), no ACK, or an
            // ACK of something we never sent.
            self.stats.bad_state += 1;
            if h.flags & (F::ACK | F::SYN) != 0 {
                c.ack_now = true;
                self.flush_ack(slot, now);
            }
            return;
        }
        self.stats.tcp_segments += 1;
        if old {
            self.stats.duplicate_segments += 1;
            self.stats.retransmitted_segments_seen += 1;
            c.ack_now = true;
            if c.state == State::TimeWait {
                c.linger_at = Some(now + self.cfg.time_wait);
            }
        }
        if c.ts_ok {
            if let Some((v, _)) = h.opts.ts {
                if off <= nxt {
                    c.ts_recent = v;
                }
            }
        }
        if !seq_lt(h.ack, c.snd_una) {
            c.snd_wnd = (h.window as usize) << c.ws_snd;
            if c.snd_wnd == 0 && !c.snd_buf.is_empty() {
                // The peer answers our probes with its window still
                // closed: alive, only slow. Probing goes on (RFC 9293
                // 3.8.6.1: no giving up while the window is zero).
                c.retries = 0;
            }
        }
        if seq_lt(c.snd_una, h.ack) {
            // Up to snd_max: after a timeout went back to snd_una, an ACK
            // may cover more than was sent since.
            let acked = h.ack.wrapping_sub(c.snd_una) as usize;
            let data = acked.min(c.snd_buf.len());
            c.snd_buf.drain(..data);
            // Past the data only the FIN takes a sequence number.
            let fin_acked = c.fin_queued && acked > data;
            c.fin_sent |= fin_acked;
            c.snd_una = h.ack;
            c.loss_window = false;
            if seq_lt(c.snd_nxt, h.ack) {
                c.snd_nxt = h.ack;
            }
            let flight = c.snd_nxt.wrapping_sub(c.snd_una) as usize;
            c.sent = flight
                .saturating_sub(c.fin_sent as usize)
                .min(c.snd_buf.len());
            c.retries = 0;
            if let Some((e, t)) = c.timing {
                if !seq_lt(h.ack, e) {
                    c.timing = None;
                    rtt_sample(c, now.saturating_duration_since(t));
                }
            }
            c.rto_at = if c.snd_una == c.snd_nxt {
                None
            } else {
                Some(now + c.rto)
            };
            if fin_acked {
                match c.state {
                    State::FinWait1 => {
                        c.state = State::FinWait2;
                        c.linger_at = Some(now + FIN_WAIT2_TIMEOUT);
                    }
                    State::Closing => {
                        c.state = State::TimeWait;
                        c.linger_at = Some(now + self.cfg.time_wait);
                        closed(&mut self.events, &mut self.stats, id, false);
                    }
                    State::LastAck => {
                        closed(&mut self.events, &mut self.stats, id, false);
                        self.free_slot(id.slot);
                        return;
                    }
                    _ => {}
                }
            }
        }
        // Data.
        if h.payload_len > 0
            && !old
            && matches!(
                c.state,
                State::Established | State::FinWait1 | State::FinWait2
            )
        {
            self.data(slot, h, pkt, (lay, off), now);
        }
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        // FIN.
        if fin && !old && c.fin_at.is_none() {
            let at = (off + h.payload_len as i64).max(0) as u64;
            if at <= c.rcv_right {
                c.fin_at = Some(at);
                // Out of order: say so at once.
                c.ack_now |= at > c.rcv_nxt;
            }
        }
        self.try_fin(slot, now);
        self.flush_ack(slot, now);
        self.output(id.slot, now, false);
    }

    /// Consumes the peer's FIN once every byte before it arrived.
    fn try_fin(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        if c.fin_rcvd || c.fin_at != Some(c.rcv_nxt) {
            return;
        }
        c.fin_rcvd = true;
        c.ack_now = true;
        let id = c.id;
        self.events.push_back(ZcEvent::Eof { conn: id });
        match c.state {
            State::Established => c.state = State::CloseWait,
            State::FinWait1 => c.state = State::Closing,
            State::FinWait2 => {
                c.state = State::TimeWait;
                c.linger_at = Some(now + self.cfg.time_wait);
                closed(&mut self.events, &mut self.stats, id, false);
            }
            _ => {}
        }
    }

    /// Takes the segment's payload: in order into chunks, out of order into
    /// the queue; whatever is not new stays in `pkt`.
    fn data(
        &mut self,
        slot: usize,
        h: &Headers,
        pkt: &mut OwnedPacket,
        (lay, off): (Lay, i64),
        now: Instant,
    ) {
        let Some(c) = self.slots[slot].as_ref() else {
            return;
        };
        let mut took = Took {
            had_ooo: !c.ooo.is_empty(),
            ..Took::default()
        };
        let mut left = h.payload_len;
        let mut soff = off;
        // Payload in the header slot: copied (the slot is not a page).
        let head = lay.head_bytes(pkt);
        if !head.is_empty() {
            let head = head.to_vec();
            let n = head.len().min(left);
            self.piece(slot, Src::Bytes(&head[..n]), soff, &mut pkt.segs, &mut took);
            soff += n as i64;
            left -= n;
        }
        let mut skip = lay.first_off;
        // Drained, not consumed: the vector (the caller's, reused for every
        // packet of a batch) keeps its allocation.
        let mut segs = std::mem::take(&mut pkt.segs);
        for seg in segs.drain(..) {
            let slen = seg.len as usize;
            if left == 0 || skip >= slen {
                skip = skip.saturating_sub(slen);
                pkt.segs.push(seg);
                continue;
            }
            let len = (slen - skip).min(left);
            let src = Src::Page(seg, skip as u32, len as u32);
            skip = 0;
            left -= len;
            self.piece(slot, src, soff, &mut pkt.segs, &mut took);
            soff += len as i64;
        }
        segs.append(&mut pkt.segs);
        pkt.segs = segs;
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        if took.retrans {
            self.stats.retransmitted_segments_seen += 1;
        }
        if !took.new_bytes {
            self.stats.duplicate_segments += 1;
            c.ack_now = true;
        }
        if took.ooo {
            self.stats.ooo_segments += 1;
            c.ack_now = true;
        }
        if took.filled {
            self.stats.ooo_gap_filled += 1;
        }
        if took.filled || (took.had_ooo && !took.ooo) {
            c.ack_now = true;
        }
        if took.new_bytes && !took.ooo {
            // Full-sized: our MSS less the timestamp option the peer sends.
            let full = self.mss - if c.ts_ok { 12 } else { 0 };
            c.full_unacked += h.payload_len / full;
            if c.full_unacked >= 2 {
                if !self.cfg.ack_per_round {
                    c.ack_now = true;
                } else if !c.ack_round {
                    c.ack_round = true;
                    self.round_acks.push(slot as u32);
                }
            } else if c.ack_due.is_none() {
                c.ack_due = Some(now + self.cfg.delayed_ack);
            }
        }
        let used = c.held() + c.ooo_bytes;
        self.stats.held_bytes_max = self.stats.held_bytes_max.max(used);
    }

    /// One piece of a segment's payload at stream offset `s`: trimmed to
    /// what is new and in the window, then delivered (in order) or queued
    /// (out of order). A page with nothing new, or copied, goes to `left`.
    fn piece(&mut self, slot: usize, src: Src<'_>, s: i64, left: &mut Vec<Seg>, took: &mut Took) {
        let copy = self.pool_low || self.pages_out >= self.cfg.max_pages;
        let Some(c) = self.slots[slot].as_mut() else {
            if let Src::Page(seg, ..) = src {
                left.push(seg);
            }
            return;
        };
        let e = s + src.len() as i64;
        let nxt = c.rcv_nxt as i64;
        if s < nxt {
            took.retrans = true;
        }
        let mut cs = s.max(nxt) as u64;
        let mut ce = e.min(c.rcv_right as i64).max(0) as u64;
        if cs >= ce {
            src.leave(left);
            return;
        }
        if cs != c.rcv_nxt {
            // Out of order: trim against the queued neighbours. One that
            // covers the piece makes it a duplicate; pieces it covers go;
            // one it reaches into cuts its tail.
            if let Some((&k, p)) = c.ooo.range(..=cs).next_back() {
                let pend = k + p.len as u64;
                if pend >= ce {
                    took.retrans = true;
                    src.leave(left);
                    return;
                }
                if pend > cs {
                    took.retrans = true;
                    cs = pend;
                }
            }
            while let Some((&k, p)) = c.ooo.range(cs..ce).next() {
                took.retrans = true;
                if k + p.len as u64 > ce {
                    ce = k;
                    break;
                }
                if let Some(p) = c.ooo.remove(&k) {
                    c.ooo_bytes -= p.len as u64;
                    loose_body(&mut self.loose, p.body);
                }
            }
            if cs >= ce {
                src.leave(left);
                return;
            }
        }
        // The part [cs, ce) of the piece, as a body.
        let from = (cs as i64 - s) as u32;
        let len = (ce - cs) as u32;
        let (body, off) = src.body(from, len, copy, left, &mut self.pages_out);
        if cs == c.rcv_nxt {
            deliver(
                c,
                &mut self.events,
                &mut self.stats,
                (&self.shared, &mut self.spare_refs),
                body,
                off,
                len,
            );
            took.new_bytes = true;
            // Pull what the out-of-order queue now continues.
            while let Some(entry) = c.ooo.first_entry() {
                if *entry.key() > c.rcv_nxt {
                    break;
                }
                let k = *entry.key();
                let mut p = entry.remove();
                c.ooo_bytes -= p.len as u64;
                took.filled = true;
                if k + p.len as u64 <= c.rcv_nxt {
                    loose_body(&mut self.loose, p.body);
                    continue;
                }
                let cut = (c.rcv_nxt - k) as u32;
                p.off += cut;
                p.len -= cut;
                deliver(
                    c,
                    &mut self.events,
                    &mut self.stats,
                    (&self.shared, &mut self.spare_refs),
                    p.body,
                    p.off,
                    p.len,
                );
            }
        } else {
            c.ooo.insert(cs, Piece { body, off, len });
            c.ooo_bytes += len as u64;
            c.recent.retain(|&r| r != cs);
            c.recent.push_front(cs);
            c.recent.truncate(SACK_RECENT);
            took.ooo = true;
            took.new_bytes = true;
        }
    }

    // ---- transmit ------------------------------------------------------

    /// Queues a TCP segment we built (counted in `segments_sent`).
    fn queue_segment(&mut self, f: Vec<u8>) {
        self.stats.segments_sent += 1;
        self.queue_frame(f);
    }

    fn queue_frame(&mut self, f: Vec<u8>) {
        if self.txq.len() >= TXQ_LIMIT {
            self.stats.tx_queue_full += 1;
            self.spare.push(f);
            return;
        }
        self.txq.push_back(f);
    }

    fn ts_now(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_millis() as u32
    }

    /// Our receive window for `c` (header value), moving its right edge.
    fn window(&mut self, slot: usize, syn: bool) -> u16 {
        let rcv_buf = self.cfg.rcv_buf as u64;
        let Some(c) = self.slots[slot].as_mut() else {
            return 0;
        };
        let avail = rcv_buf.saturating_sub(c.held() + c.ooo_bytes);
        // The SYN-ACK's window is not scaled (RFC 7323 2.2).
        let shift = if syn { 0 } else { c.ws_rcv };
        let avail = avail.min(0xFFFF << shift);
        let unit = (1u64 << shift) - 1;
        let cand = (c.rcv_nxt + avail) & !unit;
        if cand > c.rcv_right {
            c.rcv_right = cand;
        }
        let scaled = ((c.rcv_right - c.rcv_nxt) >> shift).min(0xFFFF) as u32;
        if scaled == 0 && c.last_adv != 0 {
            self.stats.window_closed += 1;
        }
        c.last_adv = scaled << shift >> c.ws_rcv;
        scaled as u16
    }

    /// Builds a segment from connection `slot` with our current ACK,
    /// window, timestamps and SACK blocks.
    fn emit(
        &mut self,
        slot: usize,
        seq: u32,
        flags: u8,
        payload: Option<(usize, usize)>,
        now: Instant,
    ) {
        let window = self.window(slot, flags & F::SYN != 0);
        let ts_val = self.ts_now(now);
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let mut blocks = [(0u64, 0u64); 4];
        let n = if c.sack_ok && flags & F::SYN == 0 {
            c.sack_blocks(&mut blocks)
        } else {
            0
        };
        let sack = blocks.map(|(l, r)| (c.seq_of(l), c.seq_of(r)));
        let sack = &sack[..n];
        self.scratch.clear();
        if let Some((from, n)) = payload {
            self.scratch.extend(c.snd_buf.range(from..from + n));
        }
        let syn = (flags & F::SYN != 0).then_some((
            self.mss as u16,
            c.ws_ok.then_some(c.ws_rcv),
            c.sack_ok,
        ));
        let o = Out {
            dst_mac: c.remote_mac,
            dst_ip: c.remote_ip,
            src_port: c.local_port,
            dst_port: c.remote_port,
            seq,
            ack: c.ack_seq(),
            flags,
            window,
            syn,
            ts: c.ts_ok.then_some((ts_val, c.ts_recent)),
            sack,
            payload: &self.scratch,
        };
        c.ack_now = false;
        c.ack_due = None;
        c.full_unacked = 0;
        let mut f = self.spare.pop().unwrap_or_default();
        self.ip_ident = self.ip_ident.wrapping_add(1);
        let blocks = wire::build(&mut f, self.cfg.mac, self.cfg.ip, self.ip_ident, &o);
        self.stats.sack_blocks_sent += blocks as u64;
        if flags == F::ACK && payload.is_none() {
            self.stats.acks_sent += 1;
        }
        self.queue_segment(f);
    }

    fn send_synack(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let iss = c.iss;
        if c.rto_at.is_none() {
            c.rto_at = Some(now + c.rto);
        }
        self.emit(slot, iss, F::SYN | F::ACK, None, now);
    }

    /// Sends the pending ACK if one is due now.
    fn flush_ack(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.slots[slot].as_ref() else {
            return;
        };
        if c.ack_now {
            let seq = c.snd_nxt;
            self.emit(slot, seq, F::ACK, None, now);
        }
    }

    /// Sends queued data (and FIN) the peer's window and our flight limit
    /// allow; `force` sends one segment whatever the window (a timeout's
    /// retransmission, a zero-window probe).
    fn output(&mut self, slot: u32, now: Instant, mut force: bool) {
        let slot = slot as usize;
        loop {
            let Some(c) = self.slots[slot].as_mut() else {
                return;
            };
            if !matches!(
                c.state,
                State::Established
                    | State::CloseWait
                    | State::FinWait1
                    | State::LastAck
                    | State::Closing
            ) {
                return;
            }
            let unsent = c.snd_buf.len() - c.sent;
            if unsent > 0 {
                let segs = if c.loss_window { 1 } else { FLIGHT_SEGMENTS };
                let limit = c.snd_wnd.min(segs * c.mss_snd);
                let room = limit.saturating_sub(c.sent);
                let n = if force {
                    unsent.min(c.mss_snd)
                } else {
                    unsent.min(c.mss_snd).min(room)
                };
                if n == 0 {
                    if c.rto_at.is_none() {
                        // Zero window: the timer probes.
                        c.rto_at = Some(now + c.rto);
                    }
                    return;
                }
                force = false;
                let seq = c.snd_nxt;
                let from = c.sent;
                c.sent += n;
                c.snd_nxt = c.snd_nxt.wrapping_add(n as u32);
                if seq_lt(seq, c.snd_max) {
                    self.stats.retransmits_sent += 1;
                } else {
                    c.snd_max = c.snd_nxt;
                    if c.timing.is_none() {
                        c.timing = Some((c.snd_nxt, now));
                    }
                }
                if c.rto_at.is_none() {
                    c.rto_at = Some(now + c.rto);
                }
                let last = c.sent == c.snd_buf.len();
                self.stats.data_segments_sent += 1;
                let flags = F::ACK | if last { F::PSH } else { 0 };
                self.emit(slot, seq, flags, Some((from, n)), now);
                continue;
            }
            if c.fin_queued && !c.fin_sent {
                let seq = c.snd_nxt;
                c.fin_sent = true;
                c.snd_nxt = c.snd_nxt.wrapping_add(1);
                if seq_lt(seq, c.snd_max) {
                    self.stats.retransmits_sent += 1;
                } else {
                    c.snd_max = c.snd_nxt;
                }
                c.state = match c.state {
                    State::Established => State::FinWait1,
                    State::CloseWait => State::LastAck,
                    s => s,
                };
                if c.rto_at.is_none() {
                    c.rto_at = Some(now + c.rto);
                }
                self.emit(slot, seq, F::FIN | F::ACK, None, now);
            }
            return;
        }
    }

    /// A RST answering segment `h` that has no connection.
    fn send_rst_to(&mut self, h: &Headers, seq: u32, ack: u32, with_ack: bool) {
        let o = Out {
            dst_mac: h.src_mac,
            dst_ip: h.src_ip,
            src_port: h.dst_port,
            dst_port: h.src_port,
            seq,
            ack,
            flags: F::RST | if with_ack { F::ACK } else { 0 },
            ..Out::default()
        };
        self.queue_rst(&o);
    }

    /// Queues the RST `o` describes (counted in `resets_sent`).
    fn queue_rst(&mut self, o: &Out) {
        let mut f = self.spare.pop().unwrap_or_default();
        self.ip_ident = self.ip_ident.wrapping_add(1);
        wire::build(&mut f, self.cfg.mac, self.cfg.ip, self.ip_ident, o);
        self.stats.resets_sent += 1;
        self.queue_segment(f);
    }

    /// Forgets connection `slot`: its queued pages go back, its slot gets
    /// a new generation so late returns do not credit a successor.
    fn free_slot(&mut self, slot: u32) {
        let Some(c) = self.slots.get_mut(slot as usize).and_then(|s| s.take()) else {
            return;
        };
        self.lookup.remove(&c.key());
        self.last_key = None;
        for (_, p) in c.ooo {
            if let Body::Page(b) = p.body {
                self.loose.push(b);
            }
        }
        let g = &mut self.gens[slot as usize];
        *g = (*g + 1) & GEN_MASK;
        self.shared.credits[slot as usize].store((*g as u64) << CREDIT_BITS, Ordering::Release);
        self.free.push(slot);
    }

    // ---- timers --------------------------------------------------------

    /// Timers: delayed ACKs, retransmission of SYN-ACK, data and FIN,
    /// window updates after returns, the end of TIME-WAIT.
    pub fn poll(&mut self, now: Instant) {
        self.now = self.now.max(now);
        // The ACKs the round's in-order data called for, one per
        // connection (unless another ACK since covered it).
        while let Some(slot) = self.round_acks.pop() {
            let slot = slot as usize;
            if let Some(c) = self.slots[slot].as_mut() {
                c.ack_round = false;
                if c.full_unacked >= 2 {
                    c.ack_now = true;
                    self.flush_ack(slot, now);
                }
            }
        }
        self.sync_credits();
        let mss = self.mss as u64;
        let rcv_buf = self.cfg.rcv_buf as u64;
        for slot in 0..self.slots.len() {
            let Some(c) = self.slots[slot].as_mut() else {
                continue;
            };
            let id = c.id;
            if c.linger_at.is_some_and(|t| now >= t) {
                if c.state == State::FinWait2 {
                    closed(&mut self.events, &mut self.stats, id, false);
                }
                self.free_slot(id.slot);
                continue;
            }
            if c.rto_at.is_some_and(|t| now >= t) {
                self.on_rto(slot, now);
                continue;
            }
            if c.ack_due.is_some_and(|t| now >= t) {
                self.stats.delayed_acks += 1;
                c.ack_now = true;
                self.flush_ack(slot, now);
                continue;
            }
            if matches!(
                c.state,
                State::Established | State::FinWait1 | State::FinWait2
            ) && !c.fin_rcvd
            {
                // A window update once returns opened two segments more
                // than the window the peer knows (and at least doubled it,
                // as Linux does, so prompt returns do not double the ACKs),
                // or a segment's worth after a zero window.
                let avail = rcv_buf
                    .saturating_sub(c.held() + c.ooo_bytes)
                    .min(0xFFFF << c.ws_rcv);
                let cand = c.rcv_nxt + avail;
                let grow = cand.saturating_sub(c.rcv_right);
                let known = c.rcv_right - c.rcv_nxt;
                let from_zero = c.last_adv == 0 && avail >= mss.min(rcv_buf / 2);
                if (grow >= 2 * mss && grow >= known) || from_zero {
                    self.stats.window_updates += 1;
                    c.ack_now = true;
                    self.flush_ack(slot, now);
                }
            }
        }
    }

    fn on_rto(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let id = c.id;
        c.retries += 1;
        self.stats.rto_timeouts += 1;
        c.timing = None;
        c.rto = (c.rto * 2).min(RTO_MAX);
        c.rto_at = Some(now + c.rto);
        if c.state == State::SynRcvd {
            if c.retries > MAX_SYNACK_RETRIES {
                self.stats.conns_timed_out += 1;
                self.free_slot(id.slot);
                return;
            }
            self.stats.retransmits_sent += 1;
            self.send_synack(slot, now);
            return;
        }
        if c.retries > MAX_RETRIES {
            self.stats.conns_timed_out += 1;
            self.abort(id);
            return;
        }
        if c.snd_una == c.snd_nxt && c.sent == c.snd_buf.len() && (c.fin_sent || !c.fin_queued) {
            c.rto_at = None;
            return;
        }
        // Go back to the oldest unacknowledged byte.
        c.loss_window = true;
        c.snd_nxt = c.snd_una;
        c.sent = 0;
        c.fin_sent = false;
        self.output(id.slot, now, true);
    }
}

/// Queues `len` bytes at `off` of `body` as the next chunk of `c`.
fn deliver(
    c: &mut Conn,
    events: &mut VecDeque<ZcEvent>,
    stats: &mut ZcStats,
    (shared, spare): (&Arc<Shared>, &mut Vec<Arc<Shared>>),
    body: Body,
    off: u32,
    len: u32,
) {
    let copy = matches!(body, Body::Copy(_));
    let chunk = ZcChunk {
        body,
        off,
        len,
        conn: c.id,
        shared: Some(spare.pop().unwrap_or_else(|| shared.clone())),
    };
    c.rcv_nxt += len as u64;
    c.delivered += len as u64;
    stats.chunks += 1;
    stats.bytes += len as u64;
    if copy {
        stats.copy_fallback_bytes += len as u64;
    }
    if chunk.page_aligned() {
        stats.page_aligned_chunks += 1;
    }
    events.push_back(ZcEvent::Data { conn: c.id, chunk });
}

/// Tells the application a connection is gone.
fn closed(events: &mut VecDeque<ZcEvent>, stats: &mut ZcStats, conn: ConnId, reset: bool) {
    events.push_back(ZcEvent::Closed { conn, reset });
    stats.conns_closed += 1;
}

/// A page (or copy) the engine no longer needs.
fn loose_body(loose: &mut Vec<Buf>, body: Body) {
    if let Body::Page(b) = body {
        loose.push(b);
    }
}

/// RFC 6298 2.2-2.4.
fn rtt_sample(c: &mut Conn, r: Duration) {
    match c.srtt {
        None => {
            c.srtt = Some(r);
            c.rttvar = r / 2;
        }
        Some(s) => {
            let diff = s.abs_diff(r);
            c.rttvar = (c.rttvar * 3 + diff) / 4;
            c.srtt = Some((s * 7 + r) / 8);
        }
    }
    let srtt = c.srtt.unwrap_or(r);
    c.rto = (srtt + (c.rttvar * 4).max(Duration::from_millis(1))).clamp(RTO_MIN, RTO_MAX);
}

/// The TCP checksum of a segment whose headers are `hdr` (Ethernet + IP +
/// TCP) and whose payload is `head` then `segs` from `first_off` on.
fn tcp_checksum_ok(h: &Headers, hdr: &[u8], head: &[u8], segs: &[Seg], first_off: usize) -> bool {
    let ip_hl = hdr.get(14).map_or(20, |b| (b & 0x0F) as usize * 4);
    let Some(tcp_hdr) = hdr.get(14 + ip_hl..h.hdr_len) else {
        return false;
    };
    let mut s = packet::checksum::Sum::new();
    s.add_acc(h.pseudo);
    s.add(tcp_hdr);
    let n = head.len().min(h.payload_len);
    s.add(&head[..n]);
    let mut left = h.payload_len - n;
    let mut skip = first_off;
    for seg in segs {
        if left == 0 {
            break;
        }
        let b = seg.buf.as_slice(seg.len as usize);
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        let part = &b[skip..];
        skip = 0;
        let n = part.len().min(left);
        s.add(&part[..n]);
        left -= n;
    }
    left == 0 && s.folded() == 0xFFFF
}

/// Copies the frame's first bytes (header slot, then pages) into `out`;
/// returns how many.
fn gather(pkt: &OwnedPacket, in_hdr: usize, out: &mut [u8; HEADERS_MAX]) -> usize {
    let mut n = 0;
    let hdr = pkt.hdr.as_ref().map(|b| b.as_slice(in_hdr));
    let pages = pkt.segs.iter().map(|s| s.buf.as_slice(s.len as usize));
    for part in hdr.into_iter().chain(pages) {
        let k = part.len().min(HEADERS_MAX - n);
        out[n..n + k].copy_from_slice(&part[..k]);
        n += k;
        if n == HEADERS_MAX {
            break;
        }
    }
    n
}

/// The whole frame, header slot and pages, copied into `out` (ICMP: small
/// and rare).
fn whole_frame(pkt: &OwnedPacket, in_hdr: usize, out: &mut Vec<u8>) {
    out.clear();
    if let Some(h) = &pkt.hdr {
        out.extend_from_slice(h.as_slice(in_hdr));
    }
    for s in &pkt.segs {
        out.extend_from_slice(s.buf.as_slice(s.len as usize));
    }
}

/// Longest Ethernet + IPv4 + TCP header.
const HEADERS_MAX: usize = 14 + 60 + 60;

/// Where a segment's payload lies in its packet.
#[derive(Clone, Copy, Debug)]
struct Lay {
    /// Offset of the payload in the pages (after the part of the headers
    /// that lies there).
    first_off: usize,
    /// Payload bytes in the header slot: this range of it.
    head: (usize, usize),
}

impl Lay {
    fn head_bytes<'a>(&self, pkt: &'a OwnedPacket) -> &'a [u8] {
        let (a, b) = self.head;
        match &pkt.hdr {
            Some(h) if b > a => h.as_slice(b).get(a..).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Where one piece of payload comes from.
enum Src<'a> {
    /// `len` bytes at `off` of a page.
    Page(Seg, u32, u32),
    /// Bytes that must be copied (they lie in a header slot).
    Bytes(&'a [u8]),
}

impl Src<'_> {
    fn len(&self) -> usize {
        match self {
            Src::Page(_, _, len) => *len as usize,
            Src::Bytes(b) => b.len(),
        }
    }

    /// Nothing of it is kept: a page goes back to the caller.
    fn leave(self, left: &mut Vec<Seg>) {
        if let Src::Page(seg, ..) = self {
            left.push(seg);
        }
    }

    /// Bytes `from..from + len` of the piece as a body and its offset in
    /// it: the page itself (counted in `pages_out`) or, with `copy` or for
    /// header-slot bytes, a heap copy (the page back to the caller).
    fn body(
        self,
        from: u32,
        len: u32,
        copy: bool,
        left: &mut Vec<Seg>,
        pages_out: &mut usize,
    ) -> (Body, u32) {
        let (a, b) = (from as usize, (from + len) as usize);
        match self {
            Src::Bytes(bytes) => (Body::Copy(bytes.get(a..b).unwrap_or(&[]).to_vec()), 0),
            Src::Page(seg, off, _) if copy => {
                let o = off as usize;
                let v = seg.buf.as_slice(o + b).get(o + a..).unwrap_or(&[]).to_vec();
                left.push(seg);
                (Body::Copy(v), 0)
            }
            Src::Page(seg, off, _) => {
                *pages_out += 1;
                (Body::Page(seg.buf), off + from)
            }
        }
    }
}

/// What became of a segment's payload pieces.
#[derive(Default)]
struct Took {
    had_ooo: bool,
    retrans: bool,
    new_bytes: bool,
    ooo: bool,
    filled: bool,
}

impl Drop for ZcStack {
    fn drop(&mut self) {
        let Some(ret) = self.foreign.take() else {
            // Pages returned from now on wait on the locked list, as they
            // would have in a shared ring.
            self.shared
                .orphan_all(std::mem::take(&mut self.rings), None);
            return;
        };
        // What the engine holds and what was returned so far, then the
        // rings handed over: the returners drain them from now on.
        let mut v = Vec::new();
        self.release_all(|b| v.push(b));
        self.shared
            .orphan_all(std::mem::take(&mut self.rings), Some(ret.clone()));
        ret.give_back(&mut v);
    }
}
