//! Command line of rxsink. Every value is checked here; a bad one is one
//! line on stderr and exit status 2.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use driver::vfio::PciAddress;
use driver::SplitMode;
use hw_sim::wire::{FrameSize, GenConfig, Proto};
use pipeline::port::{PortConfig, RxQueueConfig, SimOptions, TxQueueConfig};
pub use pipeline::port::{SimMode, WireSpec};
use pipeline::HdrPoolStrategy;
pub use stack::consume::{Copies, Touch};
use std::fmt;
use std::str::FromStr;

#[derive(Parser, Debug)]
#[command(
    name = "rxsink",
    version,
    about = "Receive sink for the igb userspace driver: drains an RX queue and reports the cost per packet"
)]
pub struct Args {
    /// NIC to drive: `sim` (the software igb model), `vfio:PCI_ADDRESS`
    /// (an 82576 / I350 bound to vfio-pci, e.g. vfio:0000:03:00.0) or
    /// `xdp:IFNAME[@QUEUE]` (any Linux interface through AF_XDP, from
    /// queue QUEUE, default 0; --queues N takes N consecutive queues).
    #[arg(long, default_value = "sim")]
    pub device: DeviceSpec,
    /// Frame source of the simulator: `gen` (built-in generator),
    /// `tap:IFNAME` (a Linux TAP device, created if missing: the host kernel
    /// is the peer), `pcap:FILE` (replay a capture) or `pair` (a second
    /// simulated NIC back to back, running a smoltcp TCP sender).
    #[arg(long, default_value = "gen")]
    pub wire: WireSpec,
    /// Faults injected on the wire, both directions:
    /// drop=PCT,dup=PCT,reorder=N,corrupt=PCT,rate=MBPS,seed=N.
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// `drop`: never touch packet data; `read`: read every byte; `tcp`: run
    /// the smoltcp stack (ARP, ping, TCP listeners) and read TCP streams in
    /// place.
    #[arg(long, default_value = "drop")]
    pub mode: Mode,
    /// tcp mode: our IPv4 address and prefix (default 10.0.0.1/24).
    #[arg(long, value_name = "A.B.C.D/NN")]
    pub ip: Option<Ipv4Net>,
    /// tcp mode: the sink's port (plain TCP, optionally --verify'd).
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// tcp mode: serve the iperf3 control protocol on this port (0 = off),
    /// so `iperf3 -c ADDR` runs against rxsink.
    #[arg(long, default_value_t = 5201)]
    pub iperf3_port: u16,
    /// tcp mode: check every byte on --port against the documented pattern
    /// (byte i of a stream is i mod 251).
    #[arg(long)]
    pub verify: bool,
    /// tcp mode: copies on the receive path. 2: the application copies each
    /// read out of smoltcp's socket ring into its own buffer (classic recv);
    /// 1: it reads the socket ring in place; 0: zero copy, it reads the
    /// NIC's payload pages in place and returns them (4 KiB payload buffers
    /// without headroom unless --payload-buf / --headroom say otherwise).
    #[arg(long, default_value = "1")]
    pub copies: Copies,
    /// tcp mode: what the application does with the bytes: none (counts
    /// them) or read (reads every byte, a sum in 64-bit words).
    #[arg(long, default_value = "none")]
    pub touch: Touch,
    /// --copies 0: how the application returns pages: ring (a lock-free
    /// refill ring the RX thread drains, io_uring zcrx style) or locked (a
    /// locked return call per --recycle-batch pages, devmem style).
    #[arg(long, default_value = "ring")]
    pub zc_return: ZcReturn,
    /// tcp mode: connections accepted at once per port.
    #[arg(long, default_value_t = 16)]
    pub max_conns: usize,
    /// tcp mode: receive window (socket receive ring) per connection, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub tcp_buf: usize,
    /// tcp mode: stop once this many connections have ended and none is open.
    #[arg(long, value_name = "N")]
    pub until_closed: Option<u64>,
    /// IP MTU: the TAP device's MTU and the stack's; the pair wire's sender uses it too.
    #[arg(long, default_value_t = 1500)]
    pub mtu: usize,
    /// tap wire: ask the kernel for 64 KiB TCP super-frames (IFF_VNET_HDR
    /// with TSO offloads), split back into segments on the wire.
    #[arg(long)]
    pub vnet_hdr: bool,
    /// pcap wire: recompute the IPv4 header and TCP/UDP checksums of every
    /// replayed frame (like `tcprewrite --fixcsum`), for captures taken on
    /// the sending host, whose checksums were left to the NIC.
    #[arg(long)]
    pub fix_checksums: bool,
    /// pair wire: parallel connections of the far side's sender.
    #[arg(long, default_value_t = 1)]
    pub pair_conns: usize,
    /// pair wire: bytes each of them sends (the pattern).
    #[arg(long, default_value_t = 64 << 20)]
    pub pair_bytes: u64,
    /// Simulator: the NIC resets itself each time it has received another
    /// BYTES (a fault for testing: the driver must notice and bring it and
    /// every queue up again).
    #[arg(long, value_name = "BYTES")]
    pub sim_reset_every: Option<u64>,
    /// Simulator: a queue's DMA engine stalls each time the NIC has received
    /// another BYTES (a fault for testing: the watchdog must notice within
    /// 200 ms, count it in queue_stalls and reset the device).
    #[arg(long, value_name = "BYTES")]
    pub sim_stall_every: Option<u64>,
    /// RX queues (1..=8). Above 1, RSS spreads flows over the queues
    /// (Toeplitz hash of addresses and ports, redirection table round robin)
    /// and each queue has its own pinned thread (queue i on core --core + i,
    /// modulo the core count), ring and pools; in tcp mode each queue runs
    /// its own smoltcp interface (same MAC and IP) and the iperf3 server is
    /// shared.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// AF_XDP (`--device xdp:`): busy-poll the device from the RX thread,
    /// USECS per empty poll (SO_BUSY_POLL with SO_PREFER_BUSY_POLL).
    #[arg(long, value_name = "USECS")]
    pub busy_poll: Option<u32>,
    /// Write every received frame (as reassembled from its buffers) to this
    /// pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap_out: Option<std::path::PathBuf>,
    /// Write one JSON line per completed RX descriptor write-back (raw
    /// dwords and decoded fields) to this file.
    #[arg(long, value_name = "FILE")]
    pub wb_log: Option<std::path::PathBuf>,
    /// Header split: off (one buffer), on (split after L4/L3), always.
    #[arg(long, default_value = "on")]
    pub header_split: SplitMode,
    /// Header buffer size in bytes (64..=960, multiple of 64).
    #[arg(long, default_value_t = 256)]
    pub hdr_buf: usize,
    /// Payload buffer size in bytes (1024..=4096, multiple of 1024; buffer + headroom <= 4096).
    #[arg(long, default_value_t = 3072)]
    pub payload_buf: usize,
    /// Bytes reserved in front of each payload buffer for in-place header prepend.
    #[arg(long, default_value_t = 256)]
    pub headroom: usize,
    /// Packets harvested per poll (1..=ring size).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// RX descriptors (power of two, 8..=4096).
    #[arg(long, default_value_t = 512)]
    pub ring_size: usize,
    /// Payload pages in the pool (default: 2 x ring size + 40 x batch, plus
    /// 8 x --recycle-batch with --cores; tcp mode: 4 x ring size + 8 x
    /// batch; --copies 0: 2 x ring size + 8 x batch + the receive windows of
    /// up to 4 connections, a page per segment, + 2 x --recycle-batch).
    #[arg(long)]
    pub pages: Option<usize>,
    /// Generated frame size in bytes: N, MIN-MAX (uniform), or imix. 60..=9216.
    #[arg(long, default_value = "64")]
    pub frame_size: FrameSizeArg,
    /// Generated flows.
    #[arg(long, default_value_t = 16)]
    pub flows: u32,
    /// Generated transport: udp, tcp or mixed.
    #[arg(long, default_value = "udp")]
    pub proto: ProtoArg,
    /// Generator seed (same seed, same frames).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stop after this many packets.
    #[arg(long)]
    pub packets: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No per-second stats lines.
    #[arg(long)]
    pub quiet: bool,
    /// Simulator: `thread` (own thread, concurrent like a NIC) or `stepped`
    /// (run inside the RX loop between polls, outside the timed section).
    /// Default: thread; stepped with --cores or --wire pair.
    #[arg(long = "sim-mode")]
    pub sim_mode_arg: Option<SimMode>,
    /// Pin the RX thread to this core.
    #[arg(long, conflicts_with = "cores")]
    pub core: Option<usize>,
    /// RX thread on core A, application thread on core B: the application
    /// consumes the packets (with --mode tcp --copies 0: the streams' pages)
    /// and returns header slots and payload pages from its own core (the
    /// contention case).
    #[arg(long, value_name = "A,B")]
    pub cores: Option<Cores>,
    /// Header pool strategy: locked (one lock per buffer, the baseline),
    /// batched, packed (refcounted 64-slot pages) or ring (lock-free).
    #[arg(long, default_value = "packed")]
    pub hdr_pool: HdrPoolStrategy,
    /// With --cores, and with --copies 0: buffers the application returns
    /// per call (1 = one lock per page, up to 1024).
    #[arg(long, default_value_t = 64)]
    pub recycle_batch: usize,
    /// Simulated hardware GRO: coalesce up to N in-order TCP segments of a
    /// flow into one packet over several descriptors (1 = off, up to 64).
    #[arg(long, default_value_t = 1)]
    pub gro: u32,
    /// Generator: consecutive segments of one flow before the next flow
    /// (default: the --gro value, so coalescing has runs to work on).
    #[arg(long)]
    pub burst: Option<u32>,
    /// Pin the simulator thread to this core (thread mode).
    #[arg(long)]
    pub sim_core: Option<usize>,
    /// Let the simulated NIC drop frames when the ring is full (counted as
    /// missed) instead of pausing the wire (802.3x flow control).
    #[arg(long)]
    pub lossy: bool,
    /// Simulator-only options given on the command line (filled by
    /// [`Args::parse_checked_from`]); rejected with a real NIC.
    #[arg(skip)]
    pub sim_options_given: Vec<&'static str>,
    /// --zc-return was given on the command line.
    #[arg(skip)]
    pub zc_return_given: bool,
}

/// Options that only drive the simulator (its wire and device model), as
/// (clap id, flag).
const SIM_ONLY: [(&str, &str); 17] = [
    ("wire", "--wire"),
    ("sim_reset_every", "--sim-reset-every"),
    ("sim_stall_every", "--sim-stall-every"),
    ("faults", "--faults"),
    ("vnet_hdr", "--vnet-hdr"),
    ("fix_checksums", "--fix-checksums"),
    ("pair_conns", "--pair-conns"),
    ("pair_bytes", "--pair-bytes"),
    ("frame_size", "--frame-size"),
    ("flows", "--flows"),
    ("proto", "--proto"),
    ("seed", "--seed"),
    ("burst", "--burst"),
    ("gro", "--gro"),
    ("lossy", "--lossy"),
    ("sim_mode_arg", "--sim-mode"),
    ("sim_core", "--sim-core"),
];

impl Args {
    /// Parses like `Args::try_parse_from` and also records which
    /// simulator-only options were given explicitly.
    pub fn parse_checked_from<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let m = Args::command().try_get_matches_from(argv)?;
        let mut a = Args::from_arg_matches(&m)?;
        let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
        // Whole pages for the payload: with header split a 4 KiB MSS lands
        // page-aligned, one chunk per page. (AF_XDP keeps its 256 bytes of
        // headroom and does no header split: its chunks are not aligned.)
        if a.copies == Copies::Zero && !matches!(a.device, DeviceSpec::Xdp(_)) {
            if !given("payload_buf") {
                a.payload_buf = 4096;
            }
            if !given("headroom") {
                a.headroom = 0;
            }
        }
        a.zc_return_given = given("zc_return");
        a.sim_options_given = SIM_ONLY
            .iter()
            .filter(|(id, _)| m.value_source(id) == Some(ValueSource::CommandLine))
            .map(|&(_, flag)| flag)
            .collect();
        Ok(a)
    }

    /// Checks that clap's per-value parsing cannot.
    pub fn validate(&self) -> Result<(), String> {
        let real = match &self.device {
            DeviceSpec::Sim => None,
            DeviceSpec::Vfio(addr) => Some(format!("vfio:{addr}")),
            DeviceSpec::Xdp(t) => Some(format!("xdp:{t}")),
        };
        if let Some(dev) = real {
            if !self.sim_options_given.is_empty() {
                let n = self.sim_options_given.len();
                return Err(format!(
                    "{} {} for the simulator only; with --device {dev} the frames come from the NIC's port",
                    self.sim_options_given.join(", "),
                    if n == 1 { "is" } else { "are" }
                ));
            }
        }
        if self.busy_poll.is_some() && !matches!(self.device, DeviceSpec::Xdp(_)) {
            return Err("--busy-poll is for --device xdp:IFNAME".into());
        }
        if self.busy_poll == Some(0) {
            return Err("--busy-poll must be at least 1 microsecond".into());
        }
        if let DeviceSpec::Xdp(t) = &self.device {
            if self.wb_log.is_some() {
                return Err(format!(
                    "--wb-log records igb write-backs; --device xdp:{t} has none"
                ));
            }
            if self.headroom < 256 {
                return Err(format!(
                    "--headroom {} must be at least 256 with --device xdp: (the kernel places frames 256 bytes into each page)",
                    self.headroom
                ));
            }
        }
        self.port_config().validate()?;
        if self.batch == 0 || self.batch > self.ring_size {
            return Err(format!(
                "--batch {} must be 1..={} (the ring size)",
                self.batch, self.ring_size
            ));
        }
        if self.flows == 0 {
            return Err("--flows must be at least 1".into());
        }
        if let Some(d) = self.duration {
            if !(d > 0.0 && d.is_finite()) {
                return Err(format!(
                    "--duration {d} must be a positive number of seconds"
                ));
            }
        }
        if self.packets == Some(0) {
            return Err("--packets must be at least 1".into());
        }
        if self.sim_core.is_some() && self.sim_mode() == SimMode::Stepped {
            return Err("--sim-core needs --sim-mode thread".into());
        }
        if let Some(c) = self.cores {
            if c.rx == c.app {
                return Err(format!(
                    "--cores {},{}: the RX and application threads need two different cores",
                    c.rx, c.app
                ));
            }
        }
        if !(1..=1024).contains(&self.recycle_batch) {
            return Err(format!(
                "--recycle-batch {} must be 1..=1024",
                self.recycle_batch
            ));
        }
        if self.burst == Some(0) {
            return Err("--burst must be at least 1".into());
        }
        self.validate_tcp()?;
        if self.queues > 1 {
            for (given, flag) in [
                (self.cores.is_some(), "--cores"),
                (self.pcap_out.is_some(), "--pcap-out"),
                (self.wb_log.is_some(), "--wb-log"),
            ] {
                if given {
                    return Err(format!(
                        "--queues {} runs one thread per queue; it does not combine with {flag}",
                        self.queues
                    ));
                }
            }
        }
        Ok(())
    }

    /// The checks of the tcp mode and the wires.
    fn validate_tcp(&self) -> Result<(), String> {
        let tcp = self.mode == Mode::Tcp;
        for (given, flag) in [
            (self.ip.is_some(), "--ip"),
            (self.verify, "--verify"),
            (self.until_closed.is_some(), "--until-closed"),
            (self.sim_reset_every.is_some(), "--sim-reset-every"),
            (self.sim_stall_every.is_some(), "--sim-stall-every"),
        ] {
            if given && !tcp {
                return Err(format!("{flag} needs --mode tcp"));
            }
        }
        for (given, flag) in [
            (self.copies != Copies::One, "--copies"),
            (self.touch != Touch::None, "--touch"),
        ] {
            if given && !tcp {
                return Err(format!("{flag} needs --mode tcp"));
            }
        }
        if self.zc_return_given && self.copies != Copies::Zero {
            return Err("--zc-return is for --copies 0".into());
        }
        if tcp && self.cores.is_some() && self.copies != Copies::Zero {
            return Err(
                "--mode tcp runs the stack on the RX thread; use --core, not --cores (--cores A,B needs --copies 0: the application thread reads the pages)".into(),
            );
        }
        if tcp && self.port == self.iperf3_port {
            return Err(format!(
                "--port {} and --iperf3-port {} must differ",
                self.port, self.iperf3_port
            ));
        }
        if tcp && self.port == 0 {
            return Err("--port must be 1..=65535".into());
        }
        if !(1..=1024).contains(&self.max_conns) {
            return Err(format!("--max-conns {} must be 1..=1024", self.max_conns));
        }
        if !(4096..=(1 << 30)).contains(&self.tcp_buf) {
            return Err(format!(
                "--tcp-buf {} must be 4096..=1073741824 bytes",
                self.tcp_buf
            ));
        }
        if !(576..=9000).contains(&self.mtu) {
            return Err(format!("--mtu {} must be 576..=9000", self.mtu));
        }
        for (v, flag) in [
            (self.sim_reset_every, "--sim-reset-every"),
            (self.sim_stall_every, "--sim-stall-every"),
        ] {
            if v == Some(0) {
                return Err(format!("{flag} must be at least 1 byte"));
            }
        }
        if self.until_closed == Some(0) {
            return Err("--until-closed must be at least 1".into());
        }
        match &self.wire {
            WireSpec::Pair if !tcp => {
                return Err("--wire pair runs a TCP sender: it needs --mode tcp".into())
            }
            WireSpec::Pair if self.pair_conns == 0 || self.pair_conns > self.max_conns => {
                return Err(format!(
                    "--pair-conns {} must be 1..={} (--max-conns)",
                    self.pair_conns, self.max_conns
                ))
            }
            _ => {}
        }
        if self.vnet_hdr && !matches!(self.wire, WireSpec::Tap(_)) {
            return Err("--vnet-hdr is for --wire tap:IFNAME".into());
        }
        if self.fix_checksums && !matches!(self.wire, WireSpec::Pcap(_)) {
            return Err("--fix-checksums is for --wire pcap:FILE".into());
        }
        if let Some(f) = &self.faults {
            f.parse::<wires::FaultConfig>()
                .map_err(|e| format!("--faults {f:?}: {e}"))?;
        }
        Ok(())
    }

    /// tcp mode: our address.
    pub fn tcp_ip(&self) -> Ipv4Net {
        self.ip.unwrap_or(Ipv4Net {
            addr: [10, 0, 0, 1],
            prefix: 24,
        })
    }

    /// The simulator mode: as given, else stepped with --cores (each of the
    /// two threads then owns a core) and thread otherwise.
    pub fn sim_mode(&self) -> SimMode {
        // Two cores: with --cores, or with the pair wire's peer thread, the
        // simulator steps inside the RX thread so every thread has a core
        // (one RX queue only: with several, each queue has its own thread).
        self.sim_mode_arg.unwrap_or(
            if self.queues == 1 && (self.cores.is_some() || self.wire == WireSpec::Pair) {
                SimMode::Stepped
            } else {
                SimMode::Thread
            },
        )
    }

    /// The port this run opens: rings, pools, simulator and fault hooks as
    /// the options say. `tx`: the stack's TX ring (tcp mode).
    pub fn port_config(&self) -> PortConfig {
        let tcp = self.mode == Mode::Tcp;
        let with_cores = self.cores.is_some();
        // Buffers in flight beside the ring: batches queued to the
        // application thread and what its returners hold (--cores), or the
        // stack's presenter and sockets (tcp).
        let (pages, hdr_slots) = if tcp && self.copies == Copies::Zero {
            // Zero copy: the payload stays in the pages until the
            // application returns it, so the pool holds the windows of a
            // few connections (one page per segment) besides the ring and
            // what the returners hold; beyond that the engine copies.
            let mss = self.mtu.saturating_sub(52).max(536);
            let windows = self.max_conns.min(4) * self.tcp_buf.div_ceil(mss);
            let pages = self.ring_size * 2 + self.batch * 8 + windows + 2 * self.recycle_batch;
            (pages, self.ring_size * 2 + self.batch * 8)
        } else if tcp {
            let pages = self.ring_size * 4 + self.batch * 8;
            (pages, self.ring_size * 2 + self.batch * 8)
        } else if self.queues > 1 {
            (
                self.ring_size * 2 + self.batch * 8,
                self.ring_size * 2 + self.batch * 4,
            )
        } else {
            let in_flight = self.batch * (crate::raw::BATCH_QUEUE + 2)
                + if with_cores {
                    2 * self.recycle_batch
                } else {
                    0
                };
            (
                self.ring_size * 2 + in_flight * 4,
                self.ring_size * 2 + in_flight * 2,
            )
        };
        PortConfig {
            queues: self.queues,
            rx: RxQueueConfig {
                ring_size: self.ring_size,
                split: self.header_split,
                payload_buf: self.payload_buf,
                headroom: self.headroom,
                pages: self.pages.unwrap_or(pages),
                hdr_buf: self.hdr_buf,
                hdr_pool: self.hdr_pool,
                hdr_slots,
            },
            tx: tcp.then(TxQueueConfig::default),
            xdp_busy_poll_us: self.busy_poll,
            // The stack's MTU: frames that large need AF_XDP multi-buffer
            // when they do not fit one buffer.
            xdp_mtu: tcp.then_some(self.mtu as u32),
            sim: SimOptions {
                mode: self.sim_mode(),
                core: self.sim_core,
                gen: self.gen_config(),
                tap_mtu: Some(self.mtu as u32),
                tap_vnet_hdr: self.vnet_hdr,
                wire_faults: self.faults.as_deref().and_then(|f| f.parse().ok()),
                pcap_fix_checksums: self.fix_checksums,
                gro: self.gro,
                lossy: self.lossy,
                schedule: hw_sim::FaultSchedule {
                    reset_every: self.sim_reset_every,
                    stall_every: self.sim_stall_every,
                },
                mac: None,
            },
            ..PortConfig::default()
        }
    }

    /// The NIC to open.
    pub fn device_spec(&self) -> pipeline::DeviceSpec {
        match &self.device {
            DeviceSpec::Sim => pipeline::DeviceSpec::Sim(self.wire.clone()),
            DeviceSpec::Vfio(a) => pipeline::DeviceSpec::Vfio(a.clone()),
            DeviceSpec::Xdp(t) => pipeline::DeviceSpec::Xdp {
                ifname: t.ifname.clone(),
                queue: t.queue,
            },
        }
    }

    pub fn gen_config(&self) -> GenConfig {
        GenConfig {
            frame_size: self.frame_size.0,
            flows: self.flows,
            proto: self.proto.0,
            seed: self.seed,
            burst: self.burst.unwrap_or(self.gro),
            ..GenConfig::default()
        }
    }
}

/// `--zc-return`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZcReturn {
    Ring,
    Locked,
}

impl FromStr for ZcReturn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ring" => Ok(ZcReturn::Ring),
            "locked" => Ok(ZcReturn::Locked),
            _ => Err(format!("{s:?} is not ring or locked")),
        }
    }
}

impl fmt::Display for ZcReturn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ZcReturn::Ring => "ring",
            ZcReturn::Locked => "locked",
        })
    }
}

/// `--cores A,B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cores {
    pub rx: usize,
    pub app: usize,
}

impl FromStr for Cores {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?} is not two cores like 0,1"))?;
        let n = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("{t:?} is not a core number"))
        };
        Ok(Cores {
            rx: n(a)?,
            app: n(b)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Sim,
    Vfio(String),
    Xdp(xdp::XdpTarget),
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "sim" {
            return Ok(DeviceSpec::Sim);
        }
        if let Some(addr) = s.strip_prefix("vfio:") {
            // Normalised to sysfs spelling (lower-case hex).
            let addr: PciAddress = addr
                .parse()
                .map_err(|e: driver::vfio::VfioError| e.to_string())?;
            return Ok(DeviceSpec::Vfio(addr.to_string()));
        }
        if let Some(t) = s.strip_prefix("xdp:") {
            return Ok(DeviceSpec::Xdp(t.parse()?));
        }
        Err(format!(
            "unknown device {s:?}: use sim, vfio:PCI_ADDRESS or xdp:IFNAME[@QUEUE]"
        ))
    }
}

/// `--ip A.B.C.D/NN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: [u8; 4],
    pub prefix: u8,
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an address with a prefix like 10.0.0.1/24"))?;
        let addr: std::net::Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| format!("prefix {p:?} must be 1..=32"))?;
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            return Err(format!("{addr} cannot be an interface address"));
        }
        Ok(Ipv4Net {
            addr: addr.octets(),
            prefix,
        })
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.addr;
        write!(f, "{a}.{b}.{c}.{d}/{}", self.prefix)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Drop,
    Read,
    Tcp,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(Mode::Drop),
            "read" => Ok(Mode::Read),
            "tcp" => Ok(Mode::Tcp),
            _ => Err(format!("unknown mode {s:?}: use drop, read or tcp")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Drop => "drop",
            Mode::Read => "read",
            Mode::Tcp => "tcp",
        })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct FrameSizeArg(pub FrameSize);

impl FromStr for FrameSizeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = |t: &str| -> Result<usize, String> {
            let v: usize = t
                .trim()
                .parse()
                .map_err(|_| format!("{t:?} is not a number"))?;
            if !(60..=9216).contains(&v) {
                return Err(format!("frame size {v} outside 60..=9216"));
            }
            Ok(v)
        };
        if s == "imix" {
            return Ok(FrameSizeArg(FrameSize::Imix));
        }
        if let Some((a, b)) = s.split_once('-') {
            let (min, max) = (n(a)?, n(b)?);
            if min > max {
                return Err(format!("frame size range {min}-{max} is empty"));
            }
            return Ok(FrameSizeArg(FrameSize::Range { min, max }));
        }
        Ok(FrameSizeArg(FrameSize::Fixed(n(s)?)))
    }
}

impl fmt::Display for FrameSizeArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Range { min, max } => write!(f, "{min}-{max}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ProtoArg(pub Proto);

impl FromStr for ProtoArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(ProtoArg(Proto::Udp)),
            "tcp" => Ok(ProtoArg(Proto::Tcp)),
            "mixed" => Ok(ProtoArg(Proto::Mixed)),
            _ => Err(format!("unknown protocol {s:?}: use udp, tcp or mixed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses() {
        assert_eq!(
            "vfio:0000:03:00.0".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Vfio("0000:03:00.0".into()))
        );
        assert_eq!(
            "vfio:0000:AF:00.1".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Vfio("0000:af:00.1".into()))
        );
        assert!("vfio:0000:03:00.8".parse::<DeviceSpec>().is_err());
        assert!("vfio:03:00.0".parse::<DeviceSpec>().is_err());
        assert!("vfio:zz".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn xdp_devices() {
        let t = |name: &str, queue| {
            DeviceSpec::Xdp(xdp::XdpTarget {
                ifname: name.into(),
                queue,
            })
        };
        assert_eq!("xdp:veth0".parse::<DeviceSpec>(), Ok(t("veth0", 0)));
        assert_eq!("xdp:eth1@3".parse::<DeviceSpec>(), Ok(t("eth1", 3)));
        for bad in ["xdp:", "xdp:eth0@", "xdp:eth0@q", "xdp:a/b"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?}");
        }
        let check = |argv: &[&str]| {
            Args::parse_checked_from(std::iter::once("rxsink").chain(argv.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(|a| a.validate().map(|_| a))
        };
        assert!(check(&["--device", "xdp:veth0", "--mode", "tcp", "--queues", "2"]).is_ok());
        // Jumbo frames: multi-buffer AF_XDP, chosen at open.
        let a = check(&["--device", "xdp:veth0", "--mode", "tcp", "--mtu", "9000"]).unwrap();
        assert_eq!(a.port_config().xdp_mtu, Some(9000));
        let a = check(&["--device", "xdp:veth0", "--mode", "drop"]).unwrap();
        assert_eq!(a.port_config().xdp_mtu, None, "the interface's MTU decides");
        for (argv, want) in [
            (
                &["--device", "xdp:veth0", "--frame-size", "64"][..],
                "for the simulator only; with --device xdp:veth0@0",
            ),
            (&["--device", "xdp:veth0", "--wb-log", "x"], "has none"),
            (&["--busy-poll", "50"], "--busy-poll is for"),
            (&["--device", "xdp:veth0", "--busy-poll", "0"], "at least 1"),
            (
                &["--device", "xdp:veth0", "--headroom", "0"],
                "at least 256",
            ),
        ] {
            let e = check(argv).err().unwrap_or_default();
            assert!(e.contains(want), "{argv:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn simulator_options_rejected_on_vfio() {
        let parse = |argv: &[&str]| {
            Args::parse_checked_from(std::iter::once("rxsink").chain(argv.iter().copied())).unwrap()
        };
        let a = parse(&[
            "--device",
            "vfio:0000:03:00.0",
            "--frame-size",
            "64",
            "--lossy",
            "--mode",
            "read",
        ]);
        assert_eq!(a.sim_options_given, vec!["--frame-size", "--lossy"]);
        let e = a.validate().unwrap_err();
        assert!(
            e.starts_with(
                "--frame-size, --lossy are for the simulator only; with --device vfio:0000:03:00.0"
            ),
            "{e}"
        );
        // Defaults do not count, and the simulator takes them all.
        assert!(parse(&[
            "--device",
            "vfio:0000:03:00.0",
            "--mode",
            "read",
            "--cores",
            "0,1"
        ])
        .validate()
        .is_ok());
        assert!(
            parse(&["--frame-size", "64", "--lossy", "--sim-mode", "stepped"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn tcp_options_are_checked() {
        let parse = |argv: &[&str]| {
            Args::parse_checked_from(std::iter::once("rxsink").chain(argv.iter().copied()))
                .map_err(|e| e.to_string())
                .and_then(|a| a.validate().map(|_| a))
        };
        assert!(parse(&["--mode", "tcp", "--ip", "192.168.7.1/24", "--verify"]).is_ok());
        for (argv, want) in [
            (&["--verify"][..], "--verify needs --mode tcp"),
            (&["--mode", "tcp", "--ip", "10.0.0.1"], "prefix like"),
            (
                &["--mode", "tcp", "--ip", "10.0.0.300/24"],
                "not an IPv4 address",
            ),
            (&["--mode", "tcp", "--ip", "10.0.0.1/33"], "must be 1..=32"),
            (
                &["--mode", "tcp", "--ip", "0.0.0.0/8"],
                "cannot be an interface",
            ),
            (&["--wire", "pair"], "needs --mode tcp"),
            (&["--wire", "tap:"], "must be 1..=15"),
            (&["--wire", "tap:averyveryverylongname"], "must be 1..=15"),
            (&["--wire", "pcap:"], "needs a file name"),
            (&["--wire", "tcp"], "unknown wire"),
            (&["--mode", "tcp", "--port", "5201"], "must differ"),
            (&["--mode", "tcp", "--mtu", "100"], "--mtu 100"),
            (&["--vnet-hdr"], "--vnet-hdr is for"),
            (&["--fix-checksums"], "--fix-checksums is for"),
            (&["--faults", "drop=200"], "--faults"),
            (&["--mode", "tcp", "--cores", "0,1"], "use --core"),
            (&["--copies", "2"], "--copies needs --mode tcp"),
            (&["--mode", "tcp", "--copies", "3"], "not 2, 1 or 0"),
            (&["--mode", "tcp", "--touch", "write"], "not none or read"),
            (&["--touch", "read"], "--touch needs --mode tcp"),
            (
                &["--mode", "tcp", "--zc-return", "locked"],
                "--zc-return is for --copies 0",
            ),
            (
                &["--mode", "tcp", "--copies", "0", "--zc-return", "spin"],
                "not ring or locked",
            ),
            (&["--queues", "0"], "--queues 0 must be"),
            (
                &["--queues", "4", "--mode", "tcp", "--pcap-out", "x.pcap"],
                "does not combine with --pcap-out",
            ),
            (
                &["--queues", "2", "--sim-mode", "stepped"],
                "does not combine",
            ),
        ] {
            let e = parse(argv).err().unwrap_or_default();
            assert!(e.contains(want), "{argv:?}: {e:?} lacks {want:?}");
        }
    }

    #[test]
    fn zero_copy_picks_whole_pages() {
        let parse = |argv: &[&str]| {
            Args::parse_checked_from(std::iter::once("rxsink").chain(argv.iter().copied())).unwrap()
        };
        let a = parse(&["--mode", "tcp", "--copies", "0"]);
        assert_eq!((a.payload_buf, a.headroom), (4096, 0));
        assert!(a.validate().is_ok());
        let a = parse(&[
            "--mode",
            "tcp",
            "--copies",
            "0",
            "--headroom",
            "256",
            "--payload-buf",
            "2048",
        ]);
        assert_eq!((a.payload_buf, a.headroom), (2048, 256));
        let a = parse(&["--mode", "tcp"]);
        assert_eq!((a.payload_buf, a.headroom), (3072, 256));
        assert!(parse(&[
            "--mode",
            "tcp",
            "--copies",
            "0",
            "--cores",
            "0,1",
            "--zc-return",
            "locked"
        ])
        .validate()
        .is_ok());
    }

    #[test]
    fn frame_sizes() {
        assert!(matches!(
            "64".parse::<FrameSizeArg>().unwrap().0,
            FrameSize::Fixed(64)
        ));
        assert!(matches!(
            "60-9216".parse::<FrameSizeArg>().unwrap().0,
            FrameSize::Range { min: 60, max: 9216 }
        ));
        assert!("59".parse::<FrameSizeArg>().is_err());
        assert!("100-70".parse::<FrameSizeArg>().is_err());
    }
}
