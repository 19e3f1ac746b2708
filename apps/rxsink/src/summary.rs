//! The final summary, one typed struct per run kind, serialized by serde
//! (`--json`). Field names are rxsink's contract with its users and
//! scripts: add fields, never rename one.

use pipeline::port::PortReport;
use pipeline::{LockStats, PoolStats};
use serde::Serialize;
use stack::segstats::SegCounters;
use std::collections::BTreeMap;

/// Device statistics registers, added up over the run.
#[derive(Serialize)]
pub struct Hw {
    pub gprc: u64,
    pub gorc: u64,
    pub mpc: u64,
}

impl From<&PortReport> for Hw {
    fn from(r: &PortReport) -> Hw {
        Hw {
            gprc: r.hw.good_packets_rx,
            gorc: r.hw.good_octets_rx,
            mpc: r.hw.missed_packets,
        }
    }
}

/// `xdp_mode`: `attach` is `native` or `generic`, `bind` is `zerocopy` or
/// `copy`; `multi_buffer`: frames larger than one buffer come (and go) as
/// several descriptors (`XDP_USE_SG`, the program loaded as `xdp.frags`).
#[derive(Serialize)]
pub struct XdpMode {
    pub attach: &'static str,
    pub bind: &'static str,
    pub multi_buffer: bool,
}

/// `xdp`: the AF_XDP counters, over every queue. `kernel_*` are the
/// kernel's (`XDP_STATISTICS`); `misplaced` are frames the kernel put
/// elsewhere than the posted buffer's first byte (dropped); wake-ups are
/// the system calls need_wakeup asked for.
#[derive(Serialize, Default)]
pub struct XdpCounters {
    pub kernel_rx_dropped: u64,
    pub kernel_rx_invalid_descs: u64,
    pub kernel_tx_invalid_descs: u64,
    pub kernel_rx_ring_full: u64,
    pub kernel_rx_fill_ring_empty_descs: u64,
    pub kernel_tx_ring_empty_descs: u64,
    pub misplaced: u64,
    pub unknown_addr: u64,
    pub rx_wakeups: u64,
    /// Frames received in several descriptors (multi-buffer).
    pub rx_multi_buffer: u64,
}

/// The AF_XDP mode and counters of a run, if it ran on AF_XDP.
pub fn xdp(r: &PortReport) -> (Option<XdpMode>, Option<XdpCounters>) {
    let Some((attach, bind)) = r.xdp_mode else {
        return (None, None);
    };
    let mut c = XdpCounters::default();
    for q in r.queues.iter().filter_map(|q| q.xdp.as_ref()) {
        c.kernel_rx_dropped += q.kernel.rx_dropped;
        c.kernel_rx_invalid_descs += q.kernel.rx_invalid_descs;
        c.kernel_tx_invalid_descs += q.kernel.tx_invalid_descs;
        c.kernel_rx_ring_full += q.kernel.rx_ring_full;
        c.kernel_rx_fill_ring_empty_descs += q.kernel.rx_fill_ring_empty_descs;
        c.kernel_tx_ring_empty_descs += q.kernel.tx_ring_empty_descs;
        c.misplaced += q.misplaced;
        c.unknown_addr += q.unknown_addr;
        c.rx_wakeups += q.rx_wakeups;
        c.rx_multi_buffer += q.rx_multi_buffer;
    }
    (
        Some(XdpMode {
            attach: attach.name(),
            bind: bind.name(),
            multi_buffer: r.xdp_multi_buffer.unwrap_or(false),
        }),
        Some(c),
    )
}

/// `--pcap-out`: frames written and write errors.
#[derive(Serialize)]
pub struct PcapOut {
    pub frames: u64,
    pub errors: u64,
}

impl From<(u64, u64)> for PcapOut {
    fn from((frames, errors): (u64, u64)) -> PcapOut {
        PcapOut { frames, errors }
    }
}

/// Drops by reason (the driver's reasons plus the device's `missed`).
pub type Drops = BTreeMap<&'static str, u64>;

/// The driver's drops of `rx` by reason, and the device's missed frames.
pub fn drops(rx: &driver::RxStats, missed: u64) -> Drops {
    let mut d: Drops = driver::DropReason::ALL
        .iter()
        .map(|&r| (r.name(), rx.drop_count(r)))
        .collect();
    d.insert("missed", missed);
    d
}

/// A pool's lock figures, per packet too.
#[derive(Serialize)]
pub struct Locks<E: Serialize> {
    #[serde(flatten)]
    pub stats: LockStats,
    pub lock_acquisitions_per_packet: f64,
    /// What the pool is configured with (`strategy`, `recycle_batch`).
    #[serde(flatten)]
    pub config: E,
}

impl<E: Serialize> Locks<E> {
    pub fn new(stats: LockStats, packets: u64, config: E) -> Locks<E> {
        Locks {
            stats,
            lock_acquisitions_per_packet: stats.per_packet(packets),
            config,
        }
    }
}

#[derive(Serialize)]
pub struct Strategy {
    pub strategy: &'static str,
}

#[derive(Serialize)]
pub struct RecycleBatch {
    pub recycle_batch: usize,
}

/// `--mode drop|read` on one queue.
#[derive(Serialize)]
pub struct Raw {
    pub device: String,
    /// AF_XDP (`--device xdp:IFNAME`): how the program was attached and
    /// the sockets bound; absent for other devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpMode>,
    /// AF_XDP: the sockets' counters, added over the queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpCounters>,
    pub wire: Option<String>,
    pub mode: String,
    pub header_split: String,
    pub sim_mode: Option<String>,
    pub cores: Option<[usize; 2]>,
    pub gro: u32,
    pub batch: usize,
    pub ring_size: usize,
    pub frame_size: String,
    pub packets: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub pps: f64,
    pub gbps: f64,
    /// Busy (frame-receiving) poll time per packet on the RX thread.
    pub ns_per_packet: f64,
    pub rx_thread_cpu_seconds: f64,
    pub app_thread_cpu_seconds: Option<f64>,
    pub polls_nonempty: u64,
    pub packets_per_poll: f64,
    pub handoff_waits: u64,
    /// The run ended because a replayed file was over and received.
    pub wire_drained: bool,
    pub drops: Drops,
    pub hbo: u64,
    pub dummy_headers: u64,
    pub refill_short: u64,
    pub pool: PoolStats,
    pub header_pool: PoolStats,
    pub hdr_pool: Locks<Strategy>,
    pub payload_return: Locks<RecycleBatch>,
    pub dma_faults: Option<u64>,
    pub hw: Hw,
    pub leaked_pages: usize,
    pub leaked_headers: usize,
    pub read_fold: u64,
    pub wire_stats: serde_json::Value,
    pub pcap_out: Option<PcapOut>,
}

/// One queue of `--queues N` in drop and read modes.
#[derive(Serialize)]
pub struct RawQueue {
    pub queue: u32,
    pub core: Option<usize>,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    /// Over the frames of the timed loop only.
    pub ns_per_packet: f64,
    pub packets_per_poll: f64,
    pub drops: u64,
    pub leaked_pages: usize,
    pub leaked_headers: usize,
}

#[derive(Serialize)]
pub struct DropsTotal {
    pub total: u64,
    pub missed: u64,
}

/// `--mode drop|read --queues N`.
#[derive(Serialize)]
pub struct RawMulti {
    pub device: String,
    /// AF_XDP (`--device xdp:IFNAME`): how the program was attached and
    /// the sockets bound; absent for other devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpMode>,
    /// AF_XDP: the sockets' counters, added over the queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpCounters>,
    pub wire: Option<String>,
    pub mode: String,
    pub header_split: String,
    pub queues: u32,
    pub rss_key: &'static str,
    pub batch: usize,
    pub ring_size: usize,
    pub frame_size: String,
    pub flows: u32,
    pub packets: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub pps: f64,
    pub gbps: f64,
    pub per_queue: Vec<RawQueue>,
    /// Every queue stopped because a replayed file was over and received.
    pub wire_drained: bool,
    pub drops: DropsTotal,
    pub dma_faults: Option<u64>,
    pub hw: Hw,
    pub wire_stats: serde_json::Value,
    pub leaked_pages: usize,
    pub leaked_headers: usize,
    pub read_fold: u64,
}

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: u64, b: u64) -> f64 {
    if b > 0 {
        a as f64 / b as f64
    } else {
        0.0
    }
}

/// The stack's TX side of one queue: frames built, dropped by reason,
/// refused while the ring was full (`busy`).
pub type TcpTx = stack::device::TxSideStats;

/// One connection's segment counters.
#[derive(Serialize)]
pub struct ConnSegments {
    #[serde(flatten)]
    pub counters: SegCounters,
    pub queue: u32,
    pub local_port: u16,
    pub remote: String,
}

#[derive(Serialize)]
pub struct Arp {
    pub shared: u64,
    pub inbox_full: u64,
    pub received: u64,
}

/// One queue of `--mode tcp`.
#[derive(Serialize)]
pub struct TcpQueue {
    pub queue: u32,
    pub packets: u64,
    pub connections: u64,
    pub bytes: u64,
    pub verified: u64,
    pub mismatches: u64,
    pub busy_seconds: f64,
    pub busy_cpu_seconds: f64,
    pub rx_restarts: u64,
    pub rx_restart_reclaimed: u64,
    pub present: stack::frame::PresentStats,
    pub tx: TcpTx,
    pub arp: Arp,
    pub leaks: stack::queue::Leaks,
}

/// The connections' totals.
#[derive(Serialize)]
pub struct Tcp {
    /// Copies on the receive path (`--copies`): "2", "1" or "0".
    pub copies: stack::Copies,
    /// What the application did with the bytes (`--touch`).
    pub touch: stack::Touch,
    pub connections: u64,
    pub closed: u64,
    pub aborted: u64,
    pub bytes: u64,
    pub verify: bool,
    pub verified: u64,
    pub mismatches: u64,
    pub iperf3_bytes: u64,
    /// Bytes the application read (`--touch read`).
    pub touched: u64,
    /// Segment counters from sequence numbers (nstat names), all queues.
    pub segments: SegCounters,
    pub segments_per_conn: Vec<ConnSegments>,
}

/// The application thread of `--copies 0 --cores A,B`.
#[derive(Serialize)]
pub struct AppThread {
    pub cpu_seconds: f64,
    /// Wall time of its polls that took chunks, and that time's CPU share.
    pub busy_seconds: f64,
    pub busy_cpu_seconds: f64,
}

/// The zero-copy engine's figures (`--copies 0`), all queues.
#[derive(Serialize, Default)]
pub struct ZcTotals {
    /// `ring` or `locked` (`--zc-return`).
    pub return_mode: String,
    pub recycle_batch: usize,
    /// Chunks delivered in stream order, and their bytes.
    pub chunks: u64,
    pub bytes: u64,
    /// Chunks starting at a page boundary (as the kernel's ncdevmem counts).
    pub page_aligned_chunks: u64,
    /// Bytes delivered as copies because the page pool ran short.
    pub copy_fallback_bytes: u64,
    /// Most bytes one connection had held by the application or queued out
    /// of order at once.
    pub held_bytes_max: u64,
    /// Return calls (batches), pages and bytes returned, and the locks the
    /// returning threads took. `return_short_calls` of the calls carried
    /// fewer than `recycle_batch` chunks (`return_short_chunks` in all): an
    /// application idle for 100 us, or finishing, returns what it holds.
    pub return_calls: u64,
    pub return_short_calls: u64,
    pub return_short_chunks: u64,
    pub returned_pages: u64,
    pub returned_bytes: u64,
    pub return_locks: u64,
    pub locks_per_returned_page: f64,
    /// Segments received out of order, with nothing new, or below the
    /// receive point (the sender retransmitted).
    pub ooo_segments: u64,
    pub duplicate_segments: u64,
    pub retransmitted_segments_seen: u64,
    /// Times a connection's window closed (zero advertised).
    pub window_closed: u64,
    /// Each queue's engine counters, in full.
    pub per_queue: Vec<stack::zc::ZcStats>,
}

impl ZcTotals {
    pub fn add(&mut self, e: &stack::zc::ZcStats, r: &stack::zc::ReturnStats) {
        self.chunks += e.chunks;
        self.bytes += e.bytes;
        self.page_aligned_chunks += e.page_aligned_chunks;
        self.copy_fallback_bytes += e.copy_fallback_bytes;
        self.held_bytes_max = self.held_bytes_max.max(e.held_bytes_max);
        self.ooo_segments += e.ooo_segments;
        self.duplicate_segments += e.duplicate_segments;
        self.retransmitted_segments_seen += e.retransmitted_segments_seen;
        self.window_closed += e.window_closed;
        self.return_calls += r.calls;
        self.return_short_calls += r.short_calls;
        self.return_short_chunks += r.short_chunks;
        self.returned_pages += r.pages;
        self.returned_bytes += r.bytes;
        self.return_locks += r.locks;
        self.locks_per_returned_page = if self.returned_pages > 0 {
            self.return_locks as f64 / self.returned_pages as f64
        } else {
            0.0
        };
        self.per_queue.push(*e);
    }
}

/// The pair wire peer's transmit side.
#[derive(Serialize)]
pub struct PeerTx {
    pub frames: u64,
    pub dropped: u64,
    pub dropped_no_buffer: u64,
    pub dropped_ring_full: u64,
    pub dropped_too_long: u64,
    pub busy: u64,
    /// Frames the peer's simulated NIC dropped on transmit.
    pub sim_tx_dropped: u64,
}

#[derive(Serialize)]
pub struct Iperf3 {
    pub tests_completed: u64,
    pub tests_failed: u64,
    pub refused_tests: u64,
    pub rejected_connections: u64,
    pub last_test_bytes: Option<u64>,
    pub last_test_streams: Option<usize>,
}

/// The pair wire's far side.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Peer {
    Done {
        ip: String,
        queued: u64,
        finished: u64,
        failed: u64,
        leaks: stack::queue::Leaks,
        tx: PeerTx,
        segments: SegCounters,
    },
    Failed {
        error: String,
    },
}

#[derive(Serialize)]
pub struct Memory {
    pub rss_kib_start: u64,
    pub rss_kib_end: u64,
}

/// `--mode tcp`.
#[derive(Serialize)]
pub struct TcpRun {
    pub device: String,
    /// AF_XDP (`--device xdp:IFNAME`): how the program was attached and
    /// the sockets bound; absent for other devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<XdpMode>,
    /// AF_XDP: the sockets' counters, added over the queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpCounters>,
    pub wire: Option<String>,
    pub mode: &'static str,
    pub ip: String,
    pub port: u16,
    pub queues: usize,
    pub header_split: String,
    pub sim_mode: Option<String>,
    pub gro: u32,
    pub mtu: usize,
    pub batch: usize,
    pub ring_size: usize,
    pub packets: u64,
    pub bytes: u64,
    /// From the start to the first queue's receive loop: opening the
    /// stacks, populating their socket memory. Not in `seconds`.
    pub setup_seconds: f64,
    /// From the first queue's receive loop starting to the last one
    /// ending (the stop); `gbps` is over it.
    pub seconds: f64,
    pub gbps: f64,
    pub rx_thread_cpu_seconds: f64,
    pub thread_cpu_seconds_per_gb: f64,
    pub busy_seconds: f64,
    pub busy_cpu_seconds: f64,
    pub cpu_seconds_per_gb: f64,
    pub tcp: Tcp,
    /// The application thread (`--copies 0 --cores A,B`), else null. Its
    /// busy CPU time is in `busy_cpu_seconds` and `cpu_seconds_per_gb`,
    /// its whole CPU time in `rx_thread_cpu_seconds`.
    pub app_thread: Option<AppThread>,
    /// The zero-copy engine (`--copies 0`), else null.
    pub zc: Option<ZcTotals>,
    pub iperf3: Option<Iperf3>,
    pub present: stack::frame::PresentStats,
    pub per_queue: Vec<TcpQueue>,
    pub device_resets: u64,
    pub queue_stalls: u64,
    /// Every queue stopped because a replayed file was over and received.
    pub wire_drained: bool,
    pub sim_faults_injected: Option<hw_sim::HookStats>,
    pub drops: Drops,
    pub hbo: u64,
    pub dma_faults: Option<u64>,
    pub sim: Option<hw_sim::SimStats>,
    pub hw: Hw,
    pub peer: Option<Peer>,
    pub wire_stats: serde_json::Value,
    pub pcap_out: Option<PcapOut>,
    pub memory: Memory,
    pub leaked_pages: usize,
    pub leaked_headers: usize,
    pub leaked_tx_buffers: usize,
}
