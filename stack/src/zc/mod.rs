//! A zero-copy TCP receive engine: in-order payload stays in the receive
//! pages and is handed to the application as chunks read in place, the way
//! Linux devmem TCP and io_uring zcrx do it. No smoltcp socket is involved
//! (smoltcp copies every payload byte into its socket ring); frames are
//! read and built with the [`packet`] crate.
//!
//! [`ZcStack`] is sans-IO and single-threaded, one per RX queue: the owner
//! thread feeds it frames ([`ZcStack::rx`]), runs its timers
//! ([`ZcStack::poll`]), sends what it queued ([`ZcStack::transmit`]) and
//! takes its events ([`ZcStack::next_event`]): connections accepted, data
//! chunks in stream order, end of stream, closes. [`ZcQueue`] is that loop
//! over a port's queue pair; `examples/zc_count.rs` uses it.
//!
//! ```
//! use stack::zc::{ReturnMode, ZcConfig, ZcEvent, ZcStack};
//! use std::time::Instant;
//!
//! let mut zc = ZcStack::new(ZcConfig::default())?; // 10.0.0.1, port 9000
//! let mut ret = zc.returner(ReturnMode::Ring, 64); // moves to the app's thread
//! // One round of the owner thread. For each packet from the RX ring:
//! //     zc.rx(&mut pkt, now);  then recycle what is left in `pkt`.
//! let now = Instant::now();
//! zc.poll(now); // timers
//! zc.transmit(|frame| {
//!     let _ = frame; // copy into a TX buffer; false if the ring is full
//!     true
//! });
//! while let Some(ev) = zc.next_event() {
//!     match ev {
//!         ZcEvent::Data { chunk, .. } => {
//!             let _payload: &[u8] = chunk.bytes(); // in the receive page
//!             ret.give_back(chunk); // any thread
//!         }
//!         ZcEvent::Eof { conn } => zc.close(conn),
//!         _ => {}
//!     }
//! }
//! ret.flush();
//! let mut pages = Vec::new();
//! zc.reclaim(|page| pages.push(page)); // the owner's pool recycle
//! # Ok::<(), String>(())
//! ```
//!
//! # What it does
//!
//! - Passive open on the [`ZcConfig::listen`] ports with MSS, window scale,
//!   SACK-permitted and timestamps (TSval echoed in TSecr); the ISN is a
//!   keyed hash of the 4-tuple and the clock.
//! - ACKs per RFC 5681 / 9293: at least every second full-sized segment,
//!   at once for out-of-order data, for a segment that fills a gap, for a
//!   FIN and for duplicates; otherwise after [`ZcConfig::delayed_ack`].
//!   With [`ZcConfig::ack_per_round`] (the default) the ACK for in-order
//!   data waits for the end of the receive round ([`ZcStack::poll`]), so
//!   one ACK covers every in-order segment of a connection in that round,
//!   as Linux ACKs once per GRO packet; the others still go at once.
//! - An out-of-order queue of page references, bounded by the window, with
//!   up to 4 SACK blocks (3 with timestamps), the most recent first.
//! - Duplicates and overlaps are trimmed by moving a chunk's offset and
//!   length, never by copying; a page with nothing new is left in the
//!   packet for the caller to recycle.
//! - Passive close (peer FIN: [`ZcEvent::Eof`] after the last byte, our FIN
//!   when the application calls [`ZcStack::close`]), active close, RST both
//!   ways, SYN-ACK / FIN / data retransmission with RTO and backoff
//!   (RFC 6298, 200 ms minimum), TIME-WAIT for [`ZcConfig::time_wait`].
//! - A small reliable send path ([`ZcStack::send`]) for control channels
//!   such as iperf3's: go-back-N from the oldest unacknowledged byte on a
//!   timeout, at most 10 segments in flight (one after a timeout until an
//!   ACK comes), no congestion control beyond that. Frames longer than a
//!   TX buffer (jumbo MTU) go out over several descriptors ([`ZcQueue`]).
//!
//! # Window accounting
//!
//! As devmem does it, every payload byte the application holds counts
//! against the connection's receive budget [`ZcConfig::rcv_buf`]: bytes
//! delivered (queued as [`ZcEvent::Data`] or handed out) and not yet
//! returned, plus the bytes waiting in the out-of-order queue. The window we
//! advertise is `rcv_buf - held - ooo`, scaled; its right edge never moves
//! left (RFC 9293 forbids shrinking the window), so a window that would
//! shrink stays where it was until the left edge catches up. A slow
//! application therefore closes the window (counted in
//! [`ZcStats::window_closed`] when we advertise 0) and loses no data;
//! returns reopen it, with a window update once it opened from zero, or
//! grew by at least two segments and at least doubled (as Linux decides,
//! so prompt returns do not double the ACKs).
//!
//! Pages are bounded too: the engine never has more than
//! [`ZcConfig::max_pages`] pages out (in its queues, with the application,
//! or returned and not yet reclaimed). Past that bound, and whenever the
//! glue says the pool is short ([`ZcStack::set_pool_low`]), payload is
//! copied into a heap buffer ([`ZcChunk::is_copy`],
//! [`ZcStats::copy_fallback_bytes`]) and the page recycled at once: never a
//! silent drop, never a deadlock on pages the application holds.
//!
//! # Returning chunks
//!
//! [`ZcStack::returner`] hands out a [`ZcReturner`] (`Send`) for the
//! application's thread, in one of two modes ([`ReturnMode`]):
//!
//! - `Ring` (zcrx): each returner has its own single-producer refill ring
//!   sized for every page the engine may have out; a batch is published
//!   with one release store, and the application takes no lock.
//! - `Locked` (devmem `SO_DEVMEM_DONTNEED`): a batch of up to `batch`
//!   chunks goes onto a free list under one lock per call.
//!
//! Either way the owner drains the returns in [`ZcStack::reclaim`] (every
//! ring in one pass; the locked list only when a flag says it holds pages)
//! and recycles the pages on its fast path; the returned byte counts reach
//! the connection through a per-slot atomic checked against the
//! connection's generation. A chunk dropped without `give_back` returns
//! itself (through the locked list: it may be dropped on any thread).
//!
//! # Not supported
//!
//! IPv6, IP options beyond skipping them, IP fragments (dropped, counted),
//! VLAN tags, urgent data (the flag is ignored), active open, PAWS,
//! D-SACK, congestion control for sending (only a fixed flight limit),
//! path MTU discovery, keep-alives. ARP is answered, not asked: replies go
//! to the MAC a segment came from. Without [`ZcStack::set_foreign_return`]
//! (which [`ZcQueue`] sets), chunks must be returned and
//! [`ZcStack::release_all`] called before the engine is dropped, or their
//! pages stay out of the pool.

mod engine;
pub mod queue;
mod ret;
#[cfg(test)]
mod tests;
/// The frame reader and builder the engine uses, public for tests and the
/// fuzz target (building a peer's segments).
pub mod wire;

pub use queue::{ZcQueue, ZcQueueStats};
pub use ret::{ReturnMode, ReturnStats, ZcChunk, ZcReturner, MAX_RETURN_BATCH};

use std::time::Duration;

/// Settings of a [`ZcStack`].
#[derive(Clone, Debug)]
pub struct ZcConfig {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    /// TCP ports accepting connections.
    pub listen: Vec<u16>,
    /// IP MTU; our MSS is `mtu - 40`.
    pub mtu: usize,
    /// Connections at once; a SYN beyond that is counted
    /// ([`ZcStats::syn_refused`]) and not answered (the peer retries).
    pub max_conns: usize,
    /// Per-connection receive budget in bytes: held + out-of-order bytes
    /// never exceed it (see the module docs).
    pub rcv_buf: usize,
    /// Per-connection send buffer for small replies.
    pub snd_buf: usize,
    /// Longest delay of an ACK for in-order data.
    pub delayed_ack: Duration,
    /// The ACK that every second full-sized in-order segment calls for is
    /// sent at the end of the receive round (the next [`ZcStack::poll`]),
    /// one per connection covering all its in-order segments of the round
    /// (a stretch ACK, as Linux sends one per GRO packet), instead of at
    /// once. For callers that poll once per received batch, as
    /// [`ZcQueue`] does; a caller that feeds frames without polling after
    /// each batch wants `false`.
    pub ack_per_round: bool,
    /// Reply to ARP requests for `ip` (set it on one queue only when
    /// several share the address: RSS sends ARP to queue 0).
    pub answer_arp: bool,
    /// Most pages out at once (engine queues, application, returns not yet
    /// reclaimed); sizes the refill ring. [`ZcQueue`] sets it to the page
    /// pool's size.
    pub max_pages: usize,
    /// How long a connection closed actively lingers in TIME-WAIT.
    pub time_wait: Duration,
}

impl Default for ZcConfig {
    fn default() -> Self {
        ZcConfig {
            mac: [0x02, 0, 0, 0, 0, 1],
            ip: [10, 0, 0, 1],
            listen: vec![9000],
            mtu: 1500,
            max_conns: 64,
            rcv_buf: 1 << 20,
            snd_buf: 64 << 10,
            delayed_ack: Duration::from_millis(1),
            ack_per_round: true,
            answer_arp: true,
            max_pages: 16384,
            time_wait: Duration::from_secs(1),
        }
    }
}

impl ZcConfig {
    /// Checks the settings [`ZcStack::new`] relies on.
    pub fn validate(&self) -> Result<(), String> {
        if !(576..=9000).contains(&self.mtu) {
            return Err(format!("mtu {} must be 576..=9000", self.mtu));
        }
        if !(1..=65536).contains(&self.max_conns) {
            return Err(format!("max_conns {} must be 1..=65536", self.max_conns));
        }
        if self.rcv_buf < 2 * self.mtu || self.rcv_buf > (1 << 30) {
            return Err(format!(
                "rcv_buf {} must be 2 * mtu ..= 1 GiB",
                self.rcv_buf
            ));
        }
        if self.snd_buf == 0 || self.snd_buf > (16 << 20) {
            return Err(format!("snd_buf {} must be 1..=16 MiB", self.snd_buf));
        }
        if !(1..=(1 << 24)).contains(&self.max_pages) {
            return Err(format!("max_pages {} must be 1..=2^24", self.max_pages));
        }
        if self.listen.is_empty() {
            return Err("no port to listen on".into());
        }
        Ok(())
    }
}

/// A connection: its slot and the slot's generation, so a stale id never
/// reaches the connection that reused the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) slot: u32,
    pub(crate) gen: u32,
}

impl ConnId {
    /// The slot, `0..max_conns`: dense, reused after a connection ends.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// A number unique to this connection for the engine's lifetime (as
    /// long as a slot is reused fewer than 2^24 times).
    pub fn as_u64(&self) -> u64 {
        (self.gen as u64) << 32 | self.slot as u64
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.slot, self.gen)
    }
}

/// What happened, in order.
#[derive(Debug)]
pub enum ZcEvent {
    /// A connection completed its handshake.
    Accepted {
        conn: ConnId,
        local_port: u16,
        remote: ([u8; 4], u16),
    },
    /// The next bytes of a connection's stream.
    Data { conn: ConnId, chunk: ZcChunk },
    /// The peer sent FIN: no more data (every `Data` came before).
    Eof { conn: ConnId },
    /// The connection is gone (closed both ways, or reset).
    Closed { conn: ConnId, reset: bool },
}

/// Counters; every frame given to [`ZcStack::rx`] is counted in
/// `rx_frames` and ends in exactly one of `tcp_segments`, `arp_frames`,
/// `icmp_echo_replies` or a drop counter (`drops()` sums them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZcStats {
    pub rx_frames: u64,
    /// TCP segments that reached a connection or a listener.
    pub tcp_segments: u64,
    pub arp_frames: u64,
    pub arp_replies: u64,
    /// ICMP echo requests to our address, answered (ping).
    pub icmp_echo_replies: u64,
    /// Chunks delivered.
    pub chunks: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    pub page_aligned_chunks: u64,
    /// Bytes delivered as heap copies (pool short or page bound reached).
    pub copy_fallback_bytes: u64,
    /// Largest held + out-of-order bytes of one connection.
    pub held_bytes_max: u64,
    /// Segments queued out of order (TcpExtTCPOFOQueue).
    pub ooo_segments: u64,
    /// Out-of-order segments that filled a hole up to rcv_nxt.
    pub ooo_gap_filled: u64,
    /// Segments with nothing new (all below rcv_nxt or already queued).
    pub duplicate_segments: u64,
    /// Segments that started below rcv_nxt or re-sent queued bytes
    /// (the peer retransmitted).
    pub retransmitted_segments_seen: u64,
    /// Times we advertised a zero window after a non-zero one.
    pub window_closed: u64,
    /// Window updates sent because returns reopened the window.
    pub window_updates: u64,
    /// Pure ACKs sent (data, SYN-ACK and FIN segments carry one too).
    pub acks_sent: u64,
    /// TCP segments sent, all kinds (SYN-ACKs, ACKs, data, FINs, RSTs).
    pub segments_sent: u64,
    /// ACKs sent by the delayed-ACK timer.
    pub delayed_acks: u64,
    pub sack_blocks_sent: u64,
    /// Segments we sent again (SYN-ACK, data, FIN).
    pub retransmits_sent: u64,
    pub rto_timeouts: u64,
    pub data_segments_sent: u64,
    pub conns_accepted: u64,
    pub conns_closed: u64,
    /// Connections aborted after too many retransmissions.
    pub conns_timed_out: u64,
    pub resets_received: u64,
    pub resets_sent: u64,
    /// SYNs beyond `max_conns`.
    pub syn_refused: u64,
    /// Frames not queued because 8192 were already waiting for
    /// `transmit` (dropped: the peer or our timer retransmits).
    pub tx_queue_full: u64,
    // Drops, by reason.
    /// TCP or IPv4 header checksum wrong.
    pub bad_checksum: u64,
    /// Truncated or inconsistent headers.
    pub malformed: u64,
    /// TCP options with impossible lengths.
    pub bad_options: u64,
    /// Segments outside the receive window (answered with an ACK).
    pub out_of_window: u64,
    /// Not to our MAC or IP.
    pub not_for_us: u64,
    /// Neither IPv4 TCP nor ARP.
    pub not_tcp: u64,
    /// IP fragments (not reassembled).
    pub ip_fragment: u64,
    /// SYN to a port nobody listens on (answered with RST).
    pub no_listener: u64,
    /// A segment for no connection (answered with RST unless it is one).
    pub no_connection: u64,
    /// Segments a connection's state refuses (a bad ACK, a SYN in an
    /// established connection, data after FIN): answered per RFC 9293.
    pub bad_state: u64,
    /// ARP frames we do not answer.
    pub arp_ignored: u64,
    /// ICMP to our address that is not an echo request with a right
    /// checksum.
    pub icmp_ignored: u64,
}

impl ZcStats {
    /// The counters the smoltcp path computes from sequence numbers
    /// ([`crate::segstats`]), under the same nstat names, so `tcp.segments`
    /// means the same for both stacks. The engine knows them first hand;
    /// `TcpExtTCPTimeouts` is its retransmission timeouts, not an estimate.
    /// The receive-side discard counters stay 0 (see the engine's own).
    pub fn seg_counters(&self) -> crate::segstats::SegCounters {
        crate::segstats::SegCounters {
            TcpInSegs: self.tcp_segments,
            TcpExtTCPOFOQueue: self.ooo_segments,
            InRetransSegs: self.retransmitted_segments_seen,
            TcpExtTCPDSACKOldSent: self.duplicate_segments,
            TcpOutSegs: self.segments_sent,
            TcpExtTCPToZeroWindowAdv: self.window_closed,
            TcpRetransSegs: self.retransmits_sent,
            TcpExtTCPTimeouts: self.rto_timeouts,
            // The discard counters model smoltcp's receive path; the
            // engine's own discards are its `out_of_window` and friends.
            TcpExtTCPZeroWindowDrop: 0,
            InOverWindowSegs: 0,
            TcpExtTCPOFODrop: 0,
        }
    }

    /// Frames dropped, all reasons.
    pub fn drops(&self) -> u64 {
        self.bad_checksum
            + self.malformed
            + self.bad_options
            + self.out_of_window
            + self.not_for_us
            + self.not_tcp
            + self.ip_fragment
            + self.no_listener
            + self.no_connection
            + self.bad_state
            + self.arp_ignored
            + self.icmp_ignored
            + self.syn_refused
    }
}

pub use engine::ZcStack;
