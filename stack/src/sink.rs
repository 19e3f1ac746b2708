//! The TCP receive sink: a smoltcp interface on one queue pair with
//! listeners that accept several connections and hand every stream to a
//! [`Consumer`] (count, read or verify against the [`crate::pattern`]: the
//! application's part, stated by [`SinkConfig::touch`] and
//! [`SinkConfig::verify`]).
//!
//! The payload is copied once by smoltcp, from the RX page into the
//! socket's receive ring. With [`Copies::One`] the application then reads
//! it in place through smoltcp's `recv` closure; with [`Copies::Two`] it
//! copies it out into its own buffer first (`recv_slice`, the classic
//! `recv`). The rings live in a [`SocketMemory`] region allocated once, up
//! front.

use crate::consume::{ConsumeStats, Consumer, Copies, Stream, Touch};
use crate::iperf3::{self, Iperf3Server, Role};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// Memory for the sockets' receive and transmit rings: one anonymous
/// mapping, populated at creation, carved into per-socket rings.
pub struct SocketMemory {
    map: memmap2::MmapMut,
}

impl SocketMemory {
    /// `bytes` of zeroed, pre-faulted memory, in transparent huge pages
    /// where the kernel has them: a ring of several MiB is walked from end
    /// to end (smoltcp's receive ring never rewinds), and with 4 KiB pages
    /// every few segments would take a TLB miss.
    pub fn new(bytes: usize) -> std::io::Result<SocketMemory> {
        let mut map = memmap2::MmapOptions::new().len(bytes.max(1)).map_anon()?;
        // Both are hints. Without MADV_POPULATE_WRITE (Linux < 5.14) every
        // page is faulted in by hand.
        let _ = map.advise(memmap2::Advice::HugePage);
        if map.advise(memmap2::Advice::PopulateWrite).is_err() {
            map.chunks_mut(4096).for_each(|page| page[0] = 0);
        }
        Ok(SocketMemory { map })
    }

    /// Memory for `sockets` sockets with the given ring sizes.
    pub fn for_sockets(sockets: usize, rx: usize, tx: usize) -> std::io::Result<SocketMemory> {
        SocketMemory::new(sockets * (rx + tx))
    }

    pub(crate) fn map_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Sink settings.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub mac: [u8; 6],
    /// Our address and prefix.
    pub ip: Ipv4Cidr,
    /// Default route, if any.
    pub gateway: Option<Ipv4Address>,
    /// The port the sink listens on.
    pub port: u16,
    /// Serve the iperf3 control protocol on this port (`None` = off), with
    /// its own `max_conns` sockets.
    pub iperf3_port: Option<u16>,
    /// Connections accepted at once (one socket each).
    pub max_conns: usize,
    /// Receive ring per connection (the advertised window; size it for the
    /// bandwidth-delay product).
    pub rx_buf: usize,
    pub tx_buf: usize,
    /// Check every byte against the pattern.
    pub verify: bool,
    /// [`Copies::Two`]: the application copies each read into its own
    /// buffer (`recv_slice`); [`Copies::One`]: it reads the socket ring in
    /// place. ([`Copies::Zero`] is the zero-copy engine, `crate::zc`.)
    pub copies: Copies,
    /// Whether the application reads the bytes or only counts them.
    pub touch: Touch,
    pub congestion: tcp::CongestionControl,
    /// smoltcp's random seed (initial sequence numbers, ports).
    pub seed: u64,
    /// Frames processed per poll before the sockets are read.
    pub ingress_budget: usize,
    /// Connection ids this sink gives out start here (several sinks sharing
    /// one iperf3 server need disjoint ids: use the queue number << 24).
    pub id_base: u32,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            ip: Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 1), 24),
            gateway: None,
            port: 9000,
            iperf3_port: None,
            max_conns: 8,
            rx_buf: 1 << 20,
            tx_buf: 16 << 10,
            verify: false,
            copies: Copies::One,
            touch: Touch::None,
            congestion: tcp::CongestionControl::Cubic,
            seed: 1,
            ingress_budget: 64,
            id_base: 0,
        }
    }
}

/// What the sink saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections that ended (FIN or reset).
    pub closed: u64,
    /// Connections that ended with a reset or timeout instead of a FIN.
    pub aborted: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Bytes checked against the pattern and found right.
    pub verified: u64,
    /// Reads that did not match the pattern (counted once per connection
    /// from the first wrong byte on; the rest of that stream is not checked).
    pub mismatches: u64,
    /// Of `bytes`, those that arrived on iperf3 data streams.
    pub iperf3_bytes: u64,
    /// Of `bytes`, those the application read (`--touch read`).
    pub touched: u64,
}

impl TcpStats {
    /// Adds what a [`Consumer`] counted.
    pub fn add_consumed(&mut self, c: ConsumeStats) {
        self.bytes += c.bytes;
        self.touched += c.touched;
        self.verified += c.verified;
        self.mismatches += c.mismatches;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Service {
    /// The plain sink on `port`.
    #[default]
    Sink,
    /// iperf3 on `iperf3_port`.
    Iperf3,
}

impl std::ops::AddAssign for TcpStats {
    fn add_assign(&mut self, o: TcpStats) {
        self.connections += o.connections;
        self.closed += o.closed;
        self.aborted += o.aborted;
        self.bytes += o.bytes;
        self.verified += o.verified;
        self.mismatches += o.mismatches;
        self.iperf3_bytes += o.iperf3_bytes;
        self.touched += o.touched;
    }
}

#[derive(Default)]
struct Conn {
    handle: SocketHandle,
    service: Service,
    /// The iperf3 server's name for this connection.
    id: iperf3::ConnId,
    open: bool,
    /// Counted as ended while the socket still waits in TIME-WAIT.
    ended: bool,
    /// The peer's FIN arrived (a normal end).
    fin: bool,
    /// Where the stream stands (offset, verification).
    stream: Stream,
}

/// A TCP sink on one interface.
pub struct TcpSink<'a> {
    iface: Interface,
    sockets: SocketSet<'a>,
    conns: Vec<Conn>,
    cfg: SinkConfig,
    stats: TcpStats,
    iperf3: SharedIperf3,
    next_id: iperf3::ConnId,
    /// When the sockets are next visited even without traffic (timers:
    /// delayed ACKs, retransmissions, TIME-WAIT, iperf3 timeouts).
    next_tick: Instant,
    /// When every socket, listening ones included, is next looked at.
    next_scan: Instant,
    /// The application's buffer ([`Copies::Two`]).
    app_buf: Vec<u8>,
}

/// The application buffer of [`Copies::Two`]: one `recv` of up to this
/// many bytes.
pub const APP_BUF: usize = 64 << 10;

/// Timer resolution of an idle sink.
const TICK: Duration = Duration::from_micros(100);
/// Interval of the look at every socket without a state change.
const SCAN: Duration = Duration::from_millis(1);

/// An iperf3 server shared by the sinks of several queues: RSS may put a
/// test's control connection and its data streams on different queues.
pub type SharedIperf3 = std::sync::Arc<std::sync::Mutex<Iperf3Server>>;

/// A new, unshared iperf3 server.
pub fn iperf3_server() -> SharedIperf3 {
    std::sync::Arc::new(std::sync::Mutex::new(Iperf3Server::new()))
}

fn lock(s: &SharedIperf3) -> std::sync::MutexGuard<'_, Iperf3Server> {
    // The server's state stays consistent across a panic elsewhere.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Configures a socket the way every socket of ours is configured: Cubic
/// (or as asked), no Nagle, a 1 ms delayed ACK, and TCP timestamps
/// offered, as Linux does (so a 4148-byte MTU carries 4096-byte segments,
/// with whichever peer agrees).
pub(crate) fn tune(s: &mut tcp::Socket<'_>, cc: tcp::CongestionControl) {
    s.set_congestion_control(cc);
    s.set_nagle_enabled(false);
    s.set_ack_delay(Some(Duration::from_millis(1)));
    s.set_tsval_generator(Some(tsval_ms));
}

/// TSval: milliseconds since the first call, wrapping (RFC 7323 wants a
/// clock that ticks between 1 ms and 1 s).
fn tsval_ms() -> u32 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u32
}

/// A smoltcp interface for `mac`/`ip` on `dev`.
pub(crate) fn interface(
    dev: &mut impl Device,
    mac: [u8; 6],
    ip: Ipv4Cidr,
    gateway: Option<Ipv4Address>,
    seed: u64,
    now: Instant,
) -> Interface {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = seed;
    let mut iface = Interface::new(config, dev, now);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::Ipv4(ip));
    });
    if let Some(gw) = gateway {
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
    }
    iface
}

impl<'a> TcpSink<'a> {
    /// A sink on `dev`, its socket rings carved from `mem` (which must hold
    /// `max_conns * (rx_buf + tx_buf)` bytes per service).
    pub fn new(
        cfg: SinkConfig,
        mem: &'a mut SocketMemory,
        dev: &mut impl Device,
        now: Instant,
    ) -> Result<TcpSink<'a>, String> {
        TcpSink::with_iperf3(cfg, mem, dev, now, iperf3_server())
    }

    /// Like [`TcpSink::new`], serving iperf3 with `server` (shared with the
    /// other queues' sinks).
    pub fn with_iperf3(
        cfg: SinkConfig,
        mem: &'a mut SocketMemory,
        dev: &mut impl Device,
        now: Instant,
        server: SharedIperf3,
    ) -> Result<TcpSink<'a>, String> {
        let per = cfg.rx_buf + cfg.tx_buf;
        if cfg.max_conns == 0 || cfg.rx_buf == 0 || cfg.tx_buf == 0 {
            return Err("max_conns, rx_buf and tx_buf must be at least 1".into());
        }
        if cfg.copies == Copies::Zero {
            return Err("the smoltcp sink copies once or twice; zero copy is stack::zc".into());
        }
        let services: Vec<(Service, u16)> = std::iter::once((Service::Sink, cfg.port))
            .chain(cfg.iperf3_port.map(|p| (Service::Iperf3, p)))
            .collect();
        let sockets_needed = cfg.max_conns * services.len();
        if mem.len() < sockets_needed * per {
            return Err(format!(
                "socket memory of {} bytes cannot hold {sockets_needed} sockets of {per} bytes",
                mem.len(),
            ));
        }
        let iface = interface(dev, cfg.mac, cfg.ip, cfg.gateway, cfg.seed, now);
        let mut sockets = SocketSet::new(Vec::with_capacity(sockets_needed));
        let mut conns = Vec::with_capacity(sockets_needed);
        let mut chunks = mem.map.chunks_mut(per);
        for &(service, port) in &services {
            for chunk in chunks.by_ref().take(cfg.max_conns) {
                let (rx, tx) = chunk.split_at_mut(cfg.rx_buf);
                let mut s =
                    tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
                tune(&mut s, cfg.congestion);
                s.listen(port)
                    .map_err(|e| format!("listen on port {port}: {e}"))?;
                conns.push(Conn {
                    handle: sockets.add(s),
                    service,
                    ..Conn::default()
                });
            }
        }
        let app_buf = match cfg.copies {
            Copies::Two => vec![0u8; APP_BUF],
            _ => Vec::new(),
        };
        Ok(TcpSink {
            app_buf,
            iface,
            sockets,
            conns,
            next_id: cfg.id_base.wrapping_add(1),
            cfg,
            stats: TcpStats::default(),
            iperf3: server,
            next_tick: now,
            next_scan: now,
        })
    }

    /// The iperf3 server (its tests and their byte counts).
    pub fn iperf3(&self) -> std::sync::MutexGuard<'_, Iperf3Server> {
        lock(&self.iperf3)
    }

    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.iter().filter(|c| c.open).count()
    }

    /// One round: up to `ingress_budget` frames into the stack, every
    /// socket read in place, then what the stack has to send. Returns
    /// whether frames arrived (the round did receive work).
    pub fn poll<D: Device>(&mut self, now: Instant, dev: &mut D) -> bool {
        let mut frames = 0;
        let mut changed = false;
        while frames < self.cfg.ingress_budget {
            use smoltcp::iface::PollIngressSingleResult as R;
            match self.iface.poll_ingress_single(now, dev, &mut self.sockets) {
                R::None => break,
                R::PacketProcessed => frames += 1,
                R::SocketStateChanged => {
                    frames += 1;
                    changed = true;
                }
            }
        }
        // An idle round costs only the look at the RX ring: the sockets
        // are visited when frames arrived, and for timers once per tick.
        let tick = now >= self.next_tick;
        if frames == 0 && !tick {
            return false;
        }
        // Listening sockets only need a look when a state changed (a
        // handshake completed) or now and then.
        let full = changed || now >= self.next_scan;
        if tick {
            self.next_tick = now + TICK;
        }
        if full {
            self.next_scan = now + SCAN;
        }
        self.service(full);
        for _ in 0..64 {
            use smoltcp::iface::PollResult;
            if self.iface.poll_egress(now, dev, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        self.iface.poll_maintenance(now);
        frames > 0
    }

    /// Reads every socket in place, tracks connection life, runs iperf3.
    fn service(&mut self, full: bool) {
        let now = std::time::Instant::now();
        // iperf3 wants data streams read before the control connection in
        // a round (TEST_END must not overtake the last data).
        for pass in [false, true] {
            for i in 0..self.conns.len() {
                let c = &self.conns[i];
                if !(full || c.open || c.ended) {
                    continue;
                }
                let control = c.service == Service::Iperf3
                    && c.open
                    && lock(&self.iperf3).role(c.id) == Role::Control;
                if control == pass {
                    self.service_one(i, now);
                }
            }
        }
        if self.cfg.iperf3_port.is_some() {
            let closes = {
                let mut server = lock(&self.iperf3);
                server.poll(now);
                let conns = &self.conns;
                server.take_closes_if(|id| conns.iter().any(|c| c.open && c.id == id))
            };
            for id in closes {
                if let Some(c) = self.conns.iter().find(|c| c.open && c.id == id) {
                    self.sockets.get_mut::<tcp::Socket>(c.handle).close();
                }
            }
        }
    }

    fn service_one(&mut self, i: usize, now: std::time::Instant) {
        let c = &mut self.conns[i];
        let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
        let iperf = c.service == Service::Iperf3;
        if !c.open && !c.ended && synchronized(s.state()) {
            *c = Conn {
                handle: c.handle,
                service: c.service,
                id: self.next_id,
                open: true,
                ..Conn::default()
            };
            self.next_id = self.next_id.wrapping_add(1);
            self.stats.connections += 1;
            if iperf {
                lock(&self.iperf3).on_accept(c.id, now);
            }
        }
        // What the application does with the bytes: iperf3's streams are
        // read (with --touch read) but never checked against the pattern.
        let consumer = Consumer {
            touch: self.cfg.touch,
            verify: self.cfg.verify && !iperf,
        };
        let mut taken = ConsumeStats::default();
        let mut take = |data: &[u8]| {
            if iperf {
                let role = lock(&self.iperf3).on_recv(c.id, data, now);
                if !matches!(role, Role::Data { .. }) {
                    // The control connection: protocol, not payload.
                    taken.bytes += data.len() as u64;
                    return;
                }
                self.stats.iperf3_bytes += data.len() as u64;
            }
            consumer.consume(&mut c.stream, data, &mut taken);
        };
        while s.can_recv() {
            let read = match self.cfg.copies {
                // Classic recv: out of the socket ring into our buffer.
                Copies::Two => s
                    .recv_slice(&mut self.app_buf)
                    .map(|n| take(&self.app_buf[..n])),
                // In place, in the socket ring.
                _ => s.recv(|data| {
                    take(data);
                    (data.len(), ())
                }),
            };
            if read.is_err() {
                break;
            }
        }
        self.stats.add_consumed(taken);
        if iperf && c.open {
            let mut server = lock(&self.iperf3);
            let out = server.pending_output(c.id);
            if !out.is_empty() && s.can_send() {
                if let Ok(n) = s.send_slice(out) {
                    server.sent(c.id, n);
                }
            }
        }
        let port = match c.service {
            Service::Sink => self.cfg.port,
            Service::Iperf3 => self.cfg.iperf3_port.unwrap_or(self.cfg.port),
        };
        match s.state() {
            // The peer finished sending: finish our side too.
            tcp::State::CloseWait => {
                c.fin = true;
                if !iperf || lock(&self.iperf3).pending_output(c.id).is_empty() {
                    s.close();
                }
            }
            tcp::State::LastAck | tcp::State::Closing => c.fin = true,
            // Both FINs exchanged: the connection is over, though the
            // socket stays in TIME-WAIT a while before it can listen again.
            tcp::State::TimeWait => {
                c.fin = true;
                if c.open {
                    c.open = false;
                    c.ended = true;
                    self.stats.closed += 1;
                    if iperf {
                        lock(&self.iperf3).on_close(c.id, now);
                    }
                }
            }
            // Closed after the handshake, or back to Listen from
            // SYN-RECEIVED (a reset): the connection is over.
            tcp::State::Closed | tcp::State::Listen => {
                if c.open {
                    c.open = false;
                    self.stats.closed += 1;
                    if !c.fin {
                        self.stats.aborted += 1;
                    }
                    if iperf {
                        lock(&self.iperf3).on_close(c.id, now);
                    }
                }
                c.ended = false;
                if s.state() == tcp::State::Closed {
                    let _ = s.listen(port);
                }
            }
            _ => {}
        }
    }
}

/// States after the handshake completed.
fn synchronized(s: tcp::State) -> bool {
    !matches!(
        s,
        tcp::State::Closed | tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived
    )
}
