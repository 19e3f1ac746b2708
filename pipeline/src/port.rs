//! A port: one NIC opened from a spec string, brought up with its queues,
//! run, and stopped in the right order with an audit of every buffer.
//!
//! ```
//! use pipeline::port::{Port, PortConfig};
//! use std::time::{Duration, Instant};
//!
//! // The simulator with its built-in frame generator, one RX queue.
//! let mut port = Port::open(&"sim".parse().unwrap(), &PortConfig::default())?;
//! let mut queues = port.take_queues();
//! port.start()?;
//! let q = &mut queues[0];
//! let mut batch = q.new_batch(32);
//! let (mut frames, deadline) = (0, Instant::now() + Duration::from_secs(5));
//! while frames < 1000 && Instant::now() < deadline {
//!     port.step(32); // the stepped simulator does its DMA here (no-op otherwise)
//!     frames += q.poll(&mut batch, 32);
//!     q.recycle(&mut batch);
//! }
//! let report = port.shutdown(queues);
//! assert!(frames >= 1000);
//! assert_eq!(report.leaked(), 0, "every page and header slot came back");
//! # Ok::<(), pipeline::port::PortError>(())
//! ```
//!
//! Who owns what: the port owns the device ([`DeviceCtl`], shared with the
//! queues for recovery) and the simulator's engine, stepped by
//! [`Port::step`] or on its own thread. Each [`Queue`] owns its RX ring
//! (and TX ring) with their pools and moves to the thread that polls it.
//!
//! Stop order ([`Port::shutdown`]): the simulator's engine stops first (no
//! DMA after that), receive and transmit are switched off, then each ring
//! stops its queue and takes back every posted buffer, and last the pools
//! are audited.

use crate::{HdrPoolStrategy, HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig, PoolError};
pub use driver::recovery::{Cause, Health, RecoveryStats, WatchConfig};
use driver::recovery::{DeviceCtl, QueueWatch};
use driver::vfio::VfioNic;
use driver::{
    Device, Igb, IgbConfig, IgbError, RssConfig, RxBatch, RxConfig, RxRing, RxStats, SplitMode,
    TxConfig, TxRing, TxStats,
};
use hw_sim::wire::{GenConfig, Generator};
use hw_sim::{FaultSchedule, SimConfig, SimEngine, SimNic, SimStats, SimThread, Wire};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;
use wires::{
    FaultConfig, FaultStats, FaultWire, PairEnd, PairStats, PcapReplay, TapConfig, TapStats,
    TapWire,
};

pub use crate::rings::{RxQueue, TxQueue};
pub use xdp::{AttachMode, BindMode};

/// Frames each direction of the pair wire holds.
const PAIR_CAPACITY: usize = 4096;

/// Ethernet header bytes on top of the MTU.
const ETH_HDR: usize = 14;

/// AF_XDP multi-buffer: the largest payload buffer (1 KiB steps) that
/// leaves the kernel's 256 bytes of headroom in a 4 KiB page.
const MB_BUF_MAX: usize = 3072;

/// Why a port could not be opened or run.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The configuration or the spec is wrong: the user's to fix.
    #[error("{0}")]
    Config(String),
    #[error("device: {0}")]
    Device(#[from] IgbError),
    #[error("{0}")]
    Vfio(#[from] driver::vfio::VfioError),
    #[error("buffer pool: {0}")]
    Pool(#[from] PoolError),
    #[error("{0}")]
    Xdp(#[from] xdp::XdpError),
    #[error("{0}")]
    Other(String),
}

impl PortError {
    /// Whether the user can fix it (bad spec, option, missing or unbound
    /// device) rather than a failure of the device.
    pub fn is_usage(&self) -> bool {
        match self {
            PortError::Config(_) => true,
            PortError::Vfio(e) => e.is_usage(),
            PortError::Xdp(e) => e.is_usage(),
            _ => false,
        }
    }
}

/// Which NIC a port drives: `sim` (the simulator with its generator),
/// `sim:WIRE` (the simulator on another wire, see [`WireSpec`]),
/// `vfio:PCI_ADDRESS` (an 82576 / I350 bound to vfio-pci) or
/// `xdp:IFNAME[@QUEUE]` (any Linux interface through AF_XDP, from queue
/// `QUEUE`, default 0; `PortConfig::queues` consecutive queues).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Sim(WireSpec),
    Vfio(String),
    Xdp { ifname: String, queue: u32 },
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "sim" {
            return Ok(DeviceSpec::Sim(WireSpec::Gen));
        }
        if let Some(w) = s.strip_prefix("sim:") {
            return Ok(DeviceSpec::Sim(w.parse()?));
        }
        if let Some(addr) = s.strip_prefix("vfio:") {
            // Normalised to sysfs spelling (lower-case hex).
            let addr: driver::vfio::PciAddress = addr
                .parse()
                .map_err(|e: driver::vfio::VfioError| e.to_string())?;
            return Ok(DeviceSpec::Vfio(addr.to_string()));
        }
        if let Some(t) = s.strip_prefix("xdp:") {
            let t: xdp::XdpTarget = t.parse()?;
            return Ok(DeviceSpec::Xdp {
                ifname: t.ifname,
                queue: t.queue,
            });
        }
        Err(format!(
            "unknown device {s:?}: use sim, vfio:PCI_ADDRESS or xdp:IFNAME[@QUEUE]"
        ))
    }
}

/// The simulator's frame source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireSpec {
    /// The built-in generator ([`SimOptions::gen`]).
    Gen,
    /// A Linux TAP device (created if missing): the host kernel is the peer.
    Tap(String),
    /// A capture replayed once.
    Pcap(PathBuf),
    /// A second simulated NIC back to back ([`Port::take_pair_end`]).
    Pair,
}

impl FromStr for WireSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("tap:") {
            if name.is_empty() || name.len() > 15 {
                return Err(format!(
                    "TAP name {name:?} must be 1..=15 bytes (an interface name)"
                ));
            }
            return Ok(WireSpec::Tap(name.into()));
        }
        if let Some(path) = s.strip_prefix("pcap:") {
            if path.is_empty() {
                return Err("pcap: needs a file name, e.g. pcap:capture.pcap".into());
            }
            return Ok(WireSpec::Pcap(path.into()));
        }
        match s {
            "gen" => Ok(WireSpec::Gen),
            "pair" => Ok(WireSpec::Pair),
            _ => Err(format!(
                "unknown wire {s:?}: use gen, tap:IFNAME, pcap:FILE or pair"
            )),
        }
    }
}

impl fmt::Display for WireSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireSpec::Gen => f.write_str("gen"),
            WireSpec::Tap(n) => write!(f, "tap:{n}"),
            WireSpec::Pcap(p) => write!(f, "pcap:{}", p.display()),
            WireSpec::Pair => f.write_str("pair"),
        }
    }
}

/// How the simulator's engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimMode {
    /// On its own thread, concurrent like a NIC.
    Thread,
    /// Inside the caller's loop: [`Port::step`].
    Stepped,
}

impl FromStr for SimMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "thread" => Ok(SimMode::Thread),
            "stepped" => Ok(SimMode::Stepped),
            _ => Err(format!("sim mode must be thread or stepped, not {s:?}")),
        }
    }
}

impl fmt::Display for SimMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SimMode::Thread => "thread",
            SimMode::Stepped => "stepped",
        })
    }
}

/// The simulator's knobs (ignored for a real device).
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub mode: SimMode,
    /// Pin the engine's thread (thread mode).
    pub core: Option<usize>,
    /// The generator wire's frames.
    pub gen: GenConfig,
    /// TAP wire: the device's MTU, and virtio-net headers (TSO super-frames).
    pub tap_mtu: Option<u32>,
    pub tap_vnet_hdr: bool,
    /// Faults injected on the wire, both directions.
    pub wire_faults: Option<FaultConfig>,
    /// pcap wire: recompute IPv4/TCP/UDP checksums on replay (a capture
    /// taken on the sending host holds checksums left to the NIC).
    pub pcap_fix_checksums: bool,
    /// Simulated hardware GRO (1 = off).
    pub gro: u32,
    /// Drop frames that find no room (MPC) instead of pausing the wire.
    pub lossy: bool,
    /// Faults the model injects on itself (device reset, stalled queue).
    pub schedule: FaultSchedule,
    /// Station address; `None`: the model's default.
    pub mac: Option<[u8; 6]>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            mode: SimMode::Stepped,
            core: None,
            gen: GenConfig::default(),
            tap_mtu: None,
            tap_vnet_hdr: false,
            wire_faults: None,
            pcap_fix_checksums: false,
            gro: 1,
            lossy: false,
            schedule: FaultSchedule::default(),
            mac: None,
        }
    }
}

/// One RX queue's ring and pools.
#[derive(Clone, Copy, Debug)]
pub struct RxQueueConfig {
    /// Descriptors: a power of two, 8..=4096.
    pub ring_size: usize,
    pub split: SplitMode,
    /// Payload buffer bytes: 1024, 2048, 3072 or 4096.
    pub payload_buf: usize,
    /// Bytes in front of each payload buffer for prepending a header in
    /// place; buffer + headroom fit one 4 KiB page.
    pub headroom: usize,
    /// Payload pages in the pool (at least the ring size).
    pub pages: usize,
    /// Header slot bytes: 64..=960 in steps of 64 (packed: at most 256).
    pub hdr_buf: usize,
    pub hdr_pool: HdrPoolStrategy,
    /// Header slots in the pool.
    pub hdr_slots: usize,
}

impl Default for RxQueueConfig {
    fn default() -> Self {
        RxQueueConfig {
            ring_size: 512,
            split: SplitMode::On,
            payload_buf: 3072,
            headroom: 256,
            pages: 2048,
            hdr_buf: 256,
            hdr_pool: HdrPoolStrategy::Packed,
            hdr_slots: 2048,
        }
    }
}

impl RxQueueConfig {
    /// The limits of the ring, the buffers and the pools, checked once.
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=4096).contains(&self.ring_size) || !self.ring_size.is_power_of_two() {
            return Err(format!(
                "--ring-size {} must be a power of two in 8..=4096",
                self.ring_size
            ));
        }
        if !(64..=960).contains(&self.hdr_buf) || !self.hdr_buf.is_multiple_of(64) {
            return Err(format!(
                "--hdr-buf {} must be 64..=960 in steps of 64",
                self.hdr_buf
            ));
        }
        if !(1024..=4096).contains(&self.payload_buf) || !self.payload_buf.is_multiple_of(1024) {
            return Err(format!(
                "--payload-buf {} must be 1024, 2048, 3072 or 4096",
                self.payload_buf
            ));
        }
        if self.payload_buf + self.headroom > 4096 {
            return Err(format!(
                "--payload-buf {} + --headroom {} exceed one 4096-byte page",
                self.payload_buf, self.headroom
            ));
        }
        if self.pages < self.ring_size {
            return Err(format!(
                "--pages {} must be at least the ring size {}",
                self.pages, self.ring_size
            ));
        }
        if self.hdr_pool == HdrPoolStrategy::Packed && self.hdr_buf > 256 {
            return Err(format!(
                "--hdr-pool packed takes --hdr-buf 64..=256, not {}",
                self.hdr_buf
            ));
        }
        Ok(())
    }

    /// Descriptors one packet may span: a coalesced packet carries up to
    /// 64 KiB, one descriptor per payload buffer plus the header's.
    pub fn max_descs_per_packet(&self) -> usize {
        65536 / self.payload_buf + 2
    }
}

/// One TX queue's ring and pool (4 KiB buffers).
#[derive(Clone, Copy, Debug)]
pub struct TxQueueConfig {
    pub ring_size: usize,
    pub bufs: usize,
}

impl Default for TxQueueConfig {
    fn default() -> Self {
        TxQueueConfig {
            ring_size: 512,
            bufs: 1024,
        }
    }
}

/// Everything a port is opened with.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// Queue pairs, 1..=8; above 1 RSS spreads flows over them.
    pub queues: u32,
    pub rx: RxQueueConfig,
    /// `None`: receive only.
    pub tx: Option<TxQueueConfig>,
    /// Largest frame accepted, FCS excluded.
    pub max_frame: u32,
    /// Device-reset recovery and the queue watchdog.
    pub watch: WatchConfig,
    pub sim: SimOptions,
    /// AF_XDP: busy-poll the device from the queue's thread for this many
    /// microseconds per empty poll (`SO_BUSY_POLL`, `SO_PREFER_BUSY_POLL`);
    /// `None`: the kernel's softirq receives. Ignored by other backends.
    pub xdp_busy_poll_us: Option<u32>,
    /// AF_XDP: the largest MTU the application expects (rxsink's `--mtu`
    /// in tcp mode). Multi-buffer is on when it, or the interface's MTU,
    /// makes frames larger than one `payload_buf` buffer. Ignored by other
    /// backends.
    pub xdp_mtu: Option<u32>,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            queues: 1,
            rx: RxQueueConfig::default(),
            tx: None,
            max_frame: 9216,
            watch: WatchConfig::default(),
            sim: SimOptions::default(),
            xdp_busy_poll_us: None,
            xdp_mtu: None,
        }
    }
}

impl PortConfig {
    /// Every limit, the simulator's included.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_queues()?;
        if self.queues > 1 && self.sim.mode == SimMode::Stepped {
            return Err(format!(
                "--queues {} runs one thread per queue; it does not combine with --sim-mode stepped",
                self.queues
            ));
        }
        if !(1..=64).contains(&self.sim.gro) {
            return Err(format!("--gro {} must be 1..=64", self.sim.gro));
        }
        Ok(())
    }

    /// The limits of the queues and rings alone (what an AF_XDP port
    /// uses; the simulator's options do not apply to it).
    pub fn validate_queues(&self) -> Result<(), String> {
        if !(1..=8).contains(&self.queues) {
            return Err(format!("--queues {} must be 1..=8", self.queues));
        }
        self.rx.validate()
    }
}

/// One queue pair with its pools: moves to the thread that polls it.
pub struct Queue {
    pub rx: RxQueue,
    pub tx: Option<TxQueue>,
    /// Recovery and the watchdog, see [`Queue::check`] (igb queues; an
    /// AF_XDP queue has no device to recover: `None`).
    pub watch: Option<QueueWatch>,
}

impl Queue {
    pub fn id(&self) -> u32 {
        self.rx.queue()
    }

    /// A batch sized for this queue's packets.
    pub fn new_batch(&self, capacity: usize) -> RxBatch {
        self.rx.new_batch(capacity)
    }

    /// Harvests up to `budget` frames into `batch` (see `RxRing::poll`).
    #[inline]
    pub fn poll(&mut self, batch: &mut RxBatch, budget: usize) -> usize {
        self.rx.poll(batch, budget)
    }

    /// Returns the batch's buffers on the owner fast path.
    #[inline]
    pub fn recycle(&mut self, batch: &mut RxBatch) {
        self.rx.recycle(batch)
    }

    /// The health check: call it every few dozen polling rounds. Restarts
    /// the rings after a device reset (bringing the device up if this queue
    /// is the first to notice) and resets a stalled device.
    pub fn check(&mut self, now: Instant) -> Health {
        self.rx.check(self.watch.as_mut(), self.tx.as_mut(), now)
    }
}

/// The simulator's engine, where it runs.
enum SimRun {
    Stepped(Box<SimEngine>),
    Thread(SimThread),
    Stopped,
}

/// The wire's parts besides the wire itself, and their counters.
#[derive(Default)]
pub struct WireParts {
    /// The far end of the pair wire, for the peer's port.
    pub far_end: Option<PairEnd>,
    pub pair: Option<PairStats>,
    pub faults: Option<FaultStats>,
    pub tap: Option<TapStats>,
    /// pcap wire: the file's frames and, with `pcap_fix_checksums`, how
    /// many frames had a checksum fixed.
    pub pcap: Option<PcapInfo>,
}

/// What a pcap replay holds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct PcapInfo {
    pub frames: usize,
    pub checksums_fixed: Option<u64>,
}

/// The one line for a kernel that refuses multi-buffer AF_XDP at an MTU
/// whose frames need it: what was refused, and the MTU that fits one
/// buffer.
fn no_multi_buffer(ifname: &str, mtu: u32, payload_buf: usize, why: &str) -> String {
    let fits = payload_buf.saturating_sub(ETH_HDR);
    format!(
        "{ifname}: MTU {mtu} makes frames of {} bytes, more than one --payload-buf {payload_buf} buffer, \
         so they need multi-buffer AF_XDP, and the kernel refused it ({why}); \
         use MTU {fits} or less (`ip link set dev {ifname} mtu {fits}`, and --mtu) or kernel 6.6 or later",
        mtu as usize + ETH_HDR
    )
}

/// An open NIC. See the module documentation.
pub struct Port {
    /// The igb device (simulator, VFIO); `None` for AF_XDP.
    ctl: Option<Arc<DeviceCtl>>,
    dev: Option<Arc<dyn Device>>,
    xdp: Option<XdpPort>,
    nic: Option<Arc<SimNic>>,
    run: SimRun,
    sim_core: Option<usize>,
    sim_mode: SimMode,
    queues: Vec<Queue>,
    has_tx: bool,
    wire: WireParts,
    stopped: bool,
}

/// The AF_XDP side of a port: the program, its map and link, and the
/// sockets to steer to on [`Port::start`].
struct XdpPort {
    attach: xdp::XdpAttach,
    iface: xdp::Interface,
    first: u32,
    bind: BindMode,
    /// Multi-buffer: frames of several descriptors (`XDP_USE_SG`, the
    /// program loaded as `xdp.frags`).
    multi_buffer: bool,
    /// (queue, socket descriptor), noted at open: the queues may have
    /// moved to their threads by the time the port starts.
    sockets: Vec<(u32, i32)>,
}

/// What [`Port::shutdown`] found.
#[derive(Clone, Debug, Default)]
pub struct PortReport {
    pub queues: Vec<QueueReport>,
    /// Device statistics registers, added up over the run.
    pub hw: driver::igb::HwStats,
    /// The simulator's own counters.
    pub sim: Option<SimStats>,
    pub recovery: RecoveryStats,
    /// Faults the simulator injected on itself.
    pub injected: Option<hw_sim::HookStats>,
    /// Problems while stopping (a queue that did not stop in time).
    pub errors: Vec<String>,
    /// AF_XDP: how the program was attached and the sockets bound.
    pub xdp_mode: Option<(AttachMode, BindMode)>,
    /// AF_XDP: whether multi-buffer was on (see [`Port::xdp_multi_buffer`]).
    pub xdp_multi_buffer: Option<bool>,
}

/// One queue at shutdown: its counters and the audit of its pools.
#[derive(Clone, Debug, Default)]
pub struct QueueReport {
    pub queue: u32,
    pub rx: RxStats,
    pub tx: Option<TxStats>,
    pub pages: crate::PoolStats,
    pub headers: crate::PoolStats,
    pub page_locks: crate::LockStats,
    pub header_locks: crate::LockStats,
    pub leaked_pages: usize,
    pub leaked_headers: usize,
    pub leaked_tx_buffers: usize,
    pub restarts: u64,
    pub stalls: u64,
    /// AF_XDP queues: the socket's counters at shutdown.
    pub xdp: Option<xdp::XdpQueueStats>,
}

impl PortReport {
    /// Buffers of every kind not back in their pools.
    pub fn leaked(&self) -> usize {
        self.leaked_pages() + self.leaked_headers() + self.leaked_tx_buffers()
    }
    pub fn leaked_pages(&self) -> usize {
        self.queues.iter().map(|q| q.leaked_pages).sum()
    }
    pub fn leaked_headers(&self) -> usize {
        self.queues.iter().map(|q| q.leaked_headers).sum()
    }
    pub fn leaked_tx_buffers(&self) -> usize {
        self.queues.iter().map(|q| q.leaked_tx_buffers).sum()
    }
    /// DMA the simulator refused (outside every mapping); `None` on hardware.
    pub fn dma_faults(&self) -> Option<u64> {
        self.sim.map(|s| s.dma_faults)
    }
}

impl Port {
    /// Opens the NIC `spec` names and builds its queues. Receive and
    /// transmit stay off until [`Port::start`].
    pub fn open(spec: &DeviceSpec, cfg: &PortConfig) -> Result<Port, PortError> {
        match spec {
            DeviceSpec::Sim(w) => {
                cfg.validate().map_err(PortError::Config)?;
                let (wire, parts) = open_wire(w, &cfg.sim)?;
                Port::open_sim(wire, parts, cfg)
            }
            DeviceSpec::Vfio(addr) => {
                cfg.validate().map_err(PortError::Config)?;
                let dev: Arc<dyn Device> = VfioNic::open(addr)?;
                Port::build(dev, None, None, WireParts::default(), cfg)
            }
            DeviceSpec::Xdp { ifname, queue } => {
                // The simulator's options do not apply.
                cfg.validate_queues().map_err(PortError::Config)?;
                Port::open_xdp(ifname, *queue, cfg)
            }
        }
    }

    /// Opens `cfg.queues` AF_XDP sockets on `ifname` from queue `first`,
    /// each with its own page pool as UMEM (TX buffers are pages of the
    /// same pool), then attaches the redirect program. The sockets are
    /// bound first, so a queue another process serves is refused with
    /// [`xdp::XdpError::QueueBusy`] before anything is attached.
    ///
    /// Multi-buffer is on when the interface's MTU (or `cfg.xdp_mtu`)
    /// makes frames larger than one `payload_buf` buffer: the sockets are
    /// bound with `XDP_USE_SG`, the program is loaded as `xdp.frags`, and
    /// the pool's buffers are made to end at their page's end (the kernel
    /// fills each descriptor's frame up to the chunk's end): `payload_buf`
    /// (at most 3072) after 4096 - `payload_buf` bytes of headroom. A
    /// kernel that refuses it is a configuration error naming the MTU that
    /// fits without it.
    fn open_xdp(ifname: &str, first: u32, cfg: &PortConfig) -> Result<Port, PortError> {
        let iface = xdp::Interface::lookup(ifname)?;
        iface.check_queues(first, cfg.queues)?;
        let r = &cfg.rx;
        let mtu = iface.mtu().max(cfg.xdp_mtu).unwrap_or(1500);
        let multi_buffer = mtu as usize + ETH_HDR > r.payload_buf;
        let (buf_len, headroom) = if multi_buffer {
            let buf_len = r.payload_buf.min(MB_BUF_MAX);
            (buf_len, xdp::CHUNK - buf_len)
        } else {
            (r.payload_buf, r.headroom)
        };
        let refused = |e: xdp::XdpError| match e {
            xdp::XdpError::NoMultiBuffer(why) => {
                PortError::Config(no_multi_buffer(ifname, mtu, r.payload_buf, &why))
            }
            e => PortError::Xdp(e),
        };
        // The kernel maps the UMEM itself: no IOMMU mapping of ours.
        let space = driver::DmaSpace::new(Arc::new(driver::dma::NoIommu));
        let mut queues = Vec::with_capacity(cfg.queues as usize);
        let mut bind = BindMode::ZeroCopy;
        let mut sockets = Vec::new();
        for q in first..first + cfg.queues {
            let tx_bufs = cfg.tx.map_or(0, |t| t.bufs);
            let pages = PagePool::new(
                &space,
                PagePoolConfig {
                    buffers: r.pages + tx_bufs,
                    buf_len,
                    headroom,
                    ..PagePoolConfig::default()
                },
            )?;
            // Never used (no header split); the queue keeps the same pools
            // as an igb queue.
            let hdrs = HeaderPool::new(
                &space,
                HeaderPoolConfig {
                    strategy: r.hdr_pool,
                    buffers: 64,
                    slot: r.hdr_buf,
                    ..HeaderPoolConfig::default()
                },
            )?;
            let xcfg = xdp::XskConfig {
                ifname: ifname.into(),
                ifindex: iface.index,
                queue: q,
                rx_ring: r.ring_size as u32,
                tx_ring: cfg.tx.map_or(0, |t| t.ring_size as u32),
                tx_bufs,
                busy_poll_us: cfg.xdp_busy_poll_us,
                multi_buffer,
            };
            let (rx, tx, mode) = xdp::open(&xcfg, pages, hdrs).map_err(refused)?;
            if mode == BindMode::Copy {
                bind = BindMode::Copy;
            }
            sockets.push((q, rx.socket_fd()));
            queues.push(Queue {
                rx: RxQueue::Xdp(rx),
                tx: tx.map(TxQueue::Xdp),
                watch: None,
            });
        }
        let attach =
            xdp::XdpAttach::attach(&iface, first + cfg.queues, multi_buffer).map_err(refused)?;
        Ok(Port {
            ctl: None,
            dev: None,
            xdp: Some(XdpPort {
                attach,
                iface,
                first,
                bind,
                multi_buffer,
                sockets,
            }),
            nic: None,
            run: SimRun::Stopped,
            sim_core: None,
            sim_mode: cfg.sim.mode,
            queues,
            has_tx: cfg.tx.is_some(),
            wire: WireParts::default(),
            stopped: false,
        })
    }

    /// Opens a simulated NIC on `wire` (e.g. the far end of a pair).
    pub fn open_sim(
        wire: Box<dyn Wire>,
        parts: WireParts,
        cfg: &PortConfig,
    ) -> Result<Port, PortError> {
        cfg.validate().map_err(PortError::Config)?;
        let mut sim_cfg = SimConfig {
            flow_control: !cfg.sim.lossy,
            gro: cfg.sim.gro,
            ..SimConfig::default()
        };
        if let Some(mac) = cfg.sim.mac {
            sim_cfg.mac = mac;
        }
        sim_cfg
            .validate()
            .map_err(|e| PortError::Config(format!("simulator: {e}")))?;
        let (nic, engine) = SimNic::new(sim_cfg, wire);
        let dev: Arc<dyn Device> = nic.clone();
        Port::build(dev, Some(nic), Some(engine), parts, cfg)
    }

    fn build(
        dev: Arc<dyn Device>,
        nic: Option<Arc<SimNic>>,
        engine: Option<SimEngine>,
        wire: WireParts,
        cfg: &PortConfig,
    ) -> Result<Port, PortError> {
        let igb = Igb::init(
            dev.clone(),
            IgbConfig {
                max_frame: cfg.max_frame,
                ..IgbConfig::default()
            },
        )?;
        let dma = igb.dma().clone();
        let ctl = Arc::new(DeviceCtl::new(igb));
        let mut queues = Vec::with_capacity(cfg.queues as usize);
        for q in 0..cfg.queues {
            queues.push(build_queue(&dev, &dma, &ctl, q, cfg)?);
        }
        if cfg.queues > 1 {
            ctl.enable_rss(&RssConfig::new(cfg.queues, &driver::rss::DEFAULT_KEY))?;
        }
        let run = match engine {
            Some(e) => SimRun::Stepped(Box::new(e)),
            None => SimRun::Stopped,
        };
        let port = Port {
            ctl: Some(ctl),
            dev: Some(dev),
            xdp: None,
            nic,
            run,
            sim_core: cfg.sim.core,
            sim_mode: cfg.sim.mode,
            queues,
            has_tx: cfg.tx.is_some(),
            wire,
            stopped: false,
        };
        if let Some(n) = &port.nic {
            n.set_fault_schedule(cfg.sim.schedule);
        }
        Ok(port)
    }

    /// The queues, to move to the threads that poll them (once).
    pub fn take_queues(&mut self) -> Vec<Queue> {
        std::mem::take(&mut self.queues)
    }

    /// The far end of the pair wire, for the peer's own port (once).
    pub fn take_pair_end(&mut self) -> Option<PairEnd> {
        self.wire.far_end.take()
    }

    /// Switches receive (and transmit) on and, in thread mode, starts the
    /// simulator's engine on its own thread.
    pub fn start(&mut self) -> Result<(), PortError> {
        if let Some(ctl) = &self.ctl {
            ctl.enable_rx();
            if self.has_tx {
                ctl.enable_tx();
            }
        }
        if let Some(x) = &self.xdp {
            // Steer each queue to its socket (the queues may already have
            // moved to their threads: the descriptors were noted at open).
            for (q, fd) in &x.sockets {
                x.attach.insert(*q, *fd)?;
            }
        }
        if self.sim_mode == SimMode::Thread {
            if let SimRun::Stepped(engine) = std::mem::replace(&mut self.run, SimRun::Stopped) {
                let core = self.sim_core;
                let t = engine
                    .spawn_with(move || {
                        if let Some(c) = core {
                            if let Err(e) = crate::pin_current_thread(c) {
                                tracing::warn!("simulator thread: {e}");
                            }
                        }
                    })
                    .map_err(|e| {
                        PortError::Other(format!("cannot start the simulator thread: {e}"))
                    })?;
                self.run = SimRun::Thread(t);
            }
        }
        Ok(())
    }

    /// Stepped simulator: does the device's work for up to `budget` frames
    /// (call it between polls). Otherwise nothing.
    #[inline]
    pub fn step(&mut self, budget: usize) -> usize {
        match &mut self.run {
            SimRun::Stepped(e) => e.step(budget),
            _ => 0,
        }
    }

    /// Whether the wire is over (a replayed file): every frame it brought
    /// was placed in a ring or dropped. Never on hardware. Once true, a poll
    /// that finds a queue's ring without progress means that queue is done.
    pub fn wire_drained(&self) -> bool {
        self.nic.as_ref().is_some_and(|n| n.wire_drained())
    }

    /// The simulated NIC (fault hooks, counters); `None` on hardware.
    pub fn sim(&self) -> Option<&Arc<SimNic>> {
        self.nic.as_ref()
    }

    pub fn wire(&self) -> &WireParts {
        &self.wire
    }

    /// The device's name (`sim:WIRE`, the PCI address, or
    /// `xdp:IFNAME@QUEUE`).
    pub fn name(&self) -> String {
        match (&self.dev, &self.xdp) {
            (Some(d), _) => d.name(),
            (None, Some(x)) => format!("xdp:{}@{}", x.iface.name, x.first),
            (None, None) => String::new(),
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        match (&self.ctl, &self.xdp) {
            (Some(c), _) => c.with(|igb| igb.mac()),
            (None, Some(x)) => x.iface.mac(),
            (None, None) => [0; 6],
        }
    }

    /// AF_XDP: how the program was attached and the sockets bound (copy
    /// if any queue's socket is in copy mode); `None` for igb.
    pub fn xdp_mode(&self) -> Option<(AttachMode, BindMode)> {
        self.xdp.as_ref().map(|x| (x.attach.mode(), x.bind))
    }

    /// AF_XDP: whether frames larger than one buffer are received (and
    /// sent) as several descriptors (multi-buffer); `None` for igb.
    pub fn xdp_multi_buffer(&self) -> Option<bool> {
        self.xdp.as_ref().map(|x| x.multi_buffer)
    }

    pub fn sim_mode(&self) -> Option<SimMode> {
        self.nic.as_ref().map(|_| self.sim_mode)
    }

    /// The device, shared with the queues' watches (statistics, recovery
    /// counters).
    ///
    /// # Panics
    /// On an AF_XDP port, which has no igb device (see [`Port::xdp_mode`]).
    pub fn ctl(&self) -> &Arc<DeviceCtl> {
        self.ctl
            .as_ref()
            .expect("an AF_XDP port has no igb device control")
    }

    /// Stops the device: the simulator's engine first (no DMA after this),
    /// then receive and transmit. The queues keep what the device wrote
    /// before, for a last harvest. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if let SimRun::Thread(t) = std::mem::replace(&mut self.run, SimRun::Stopped) {
            self.run = SimRun::Stepped(Box::new(t.stop()));
        }
        self.run = SimRun::Stopped;
        if let Some(ctl) = &self.ctl {
            ctl.disable();
        }
        if let Some(x) = &mut self.xdp {
            // No more frames steered to the sockets: the queues keep what
            // is in their RX rings for a last harvest.
            x.attach.detach();
        }
    }

    /// Stops the device (if [`Port::stop`] was not called), then every
    /// queue, and audits every pool. Give back every queue taken.
    pub fn shutdown(mut self, queues: Vec<Queue>) -> PortReport {
        self.stop();
        let mut report = PortReport::default();
        for mut q in queues.into_iter().chain(std::mem::take(&mut self.queues)) {
            if let Err(e) = q.rx.stop() {
                report.errors.push(format!("RX queue {}: {e}", q.id()));
            }
            let mut qr = QueueReport {
                queue: q.id(),
                rx: *q.rx.stats(),
                restarts: q.watch.as_ref().map_or(0, |w| w.restarts),
                stalls: q.watch.as_ref().map_or(0, |w| w.stalls),
                xdp: q.rx.as_xdp().map(|r| r.xdp_stats()),
                ..QueueReport::default()
            };
            // AF_XDP: once both halves have stopped, the socket is closed
            // and every buffer either half held is back in the pool.
            if let Some(tx) = &mut q.tx {
                if let Err(e) = tx.stop() {
                    report.errors.push(format!("TX queue {}: {e}", qr.queue));
                }
                qr.tx = Some(*tx.stats());
                qr.leaked_tx_buffers = tx.leaked();
            }
            let (pages, hdrs) = q.rx.pools();
            qr.pages = pages.stats();
            qr.headers = hdrs.stats();
            qr.page_locks = pages.lock_stats();
            qr.header_locks = hdrs.lock_stats();
            qr.leaked_pages = pages.audit().lent;
            qr.leaked_headers = hdrs.audit().lent;
            report.queues.push(qr);
        }
        if let Some(ctl) = &self.ctl {
            report.hw = ctl.with(|igb| igb.read_stats());
            report.recovery = ctl.stats();
        }
        report.xdp_mode = self.xdp_mode();
        report.xdp_multi_buffer = self.xdp_multi_buffer();
        report.sim = self.nic.as_ref().map(|n| n.stats());
        report.injected = self.nic.as_ref().map(|n| n.hook_stats());
        report
    }
}

/// A port dropped without [`Port::shutdown`] (an error path) still stops in
/// order: the simulator's engine before the device, before the queues the
/// caller still holds (their rings stop and return their buffers when
/// dropped).
impl Drop for Port {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates queue `q`'s pools and rings on `igb`.
fn build_queue(
    dev: &Arc<dyn Device>,
    dma: &Arc<driver::DmaSpace>,
    ctl: &Arc<DeviceCtl>,
    q: u32,
    cfg: &PortConfig,
) -> Result<Queue, PortError> {
    let r = &cfg.rx;
    let pages = PagePool::new(
        dma,
        PagePoolConfig {
            buffers: r.pages,
            buf_len: r.payload_buf,
            headroom: r.headroom,
            ..PagePoolConfig::default()
        },
    )?;
    let hdrs = HeaderPool::new(
        dma,
        HeaderPoolConfig {
            strategy: r.hdr_pool,
            buffers: r.hdr_slots,
            slot: r.hdr_buf,
            ..HeaderPoolConfig::default()
        },
    )?;
    let rx = RxQueue::Igb(RxRing::new(
        dev.clone(),
        dma,
        RxConfig {
            queue: q,
            ring_size: r.ring_size,
            split: r.split,
            max_descs_per_packet: r.max_descs_per_packet(),
        },
        pages,
        hdrs,
    )?);
    let tx = match cfg.tx {
        Some(t) => {
            let pool = PagePool::new(
                dma,
                PagePoolConfig {
                    buffers: t.bufs,
                    buf_len: 4096,
                    headroom: 0,
                    ..PagePoolConfig::default()
                },
            )?;
            Some(TxQueue::Igb(TxRing::new(
                dev.clone(),
                dma,
                TxConfig {
                    queue: q,
                    ring_size: t.ring_size,
                },
                pool,
            )?))
        }
        None => None,
    };
    Ok(Queue {
        rx,
        tx,
        watch: Some(QueueWatch::new(ctl.clone(), cfg.watch)),
    })
}

/// Builds the wire `spec` names, wrapped in the fault injector when
/// `opts.wire_faults` is set.
pub fn open_wire(
    spec: &WireSpec,
    opts: &SimOptions,
) -> Result<(Box<dyn Wire>, WireParts), PortError> {
    let mut parts = WireParts::default();
    let base: Box<dyn Wire> = match spec {
        WireSpec::Gen => Box::new(
            Generator::new(opts.gen.clone())
                .map_err(|e| PortError::Config(format!("--wire gen: {e}")))?,
        ),
        WireSpec::Tap(name) => {
            let cfg = TapConfig {
                vnet_hdr: opts.tap_vnet_hdr,
                mtu: opts.tap_mtu,
                ..TapConfig::new(name.clone())
            };
            let tap = TapWire::open(cfg)
                .map_err(|e| PortError::Config(format!("--wire tap:{name}: {e}")))?;
            parts.tap = Some(tap.stats());
            Box::new(tap)
        }
        WireSpec::Pcap(path) => {
            let mut replay = PcapReplay::open(path)
                .map_err(|e| PortError::Config(format!("--wire pcap:{}: {e}", path.display())))?;
            if opts.pcap_fix_checksums {
                replay = replay.fix_checksums();
            }
            parts.pcap = Some(PcapInfo {
                frames: replay.len(),
                checksums_fixed: opts.pcap_fix_checksums.then(|| replay.checksums_fixed()),
            });
            Box::new(replay)
        }
        WireSpec::Pair => {
            let (near, far) = wires::pair(PAIR_CAPACITY);
            parts.pair = Some(near.stats());
            parts.far_end = Some(far);
            Box::new(near)
        }
    };
    let Some(cfg) = &opts.wire_faults else {
        return Ok((base, parts));
    };
    let fw = FaultWire::new(base, cfg.clone())
        .map_err(|e| PortError::Config(format!("--faults: {e}")))?;
    parts.faults = Some(fw.stats());
    Ok((Box::new(fw), parts))
}

#[cfg(test)]
mod tests {
    /// A kernel without multi-buffer AF_XDP (before 6.6) gets one line
    /// naming what it refused and the MTU that fits one buffer.
    #[test]
    fn a_refused_multi_buffer_names_the_mtu_that_fits() {
        let m = super::no_multi_buffer(
            "veth0",
            9000,
            3072,
            "bind with XDP_USE_SG: Invalid argument (os error 22)",
        );
        assert!(!m.contains('\n'), "{m}");
        for want in [
            "MTU 9000 makes frames of 9014 bytes",
            "--payload-buf 3072",
            "XDP_USE_SG: Invalid argument",
            "use MTU 3058 or less",
            "ip link set dev veth0 mtu 3058",
        ] {
            assert!(m.contains(want), "{m:?} lacks {want:?}");
        }
    }
}
