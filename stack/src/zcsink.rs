//! The zero-copy TCP receive sink: the [`zc`](crate::zc) engine on one
//! port queue, with the same services as [`TcpSink`](crate::TcpSink) (the
//! plain sink on one port, the iperf3 server on another) and the same
//! [`Consumer`] behind it, so `--copies 0` differs from the other rungs of
//! the copy ladder only in the copies.
//!
//! The application reads each [`ZcChunk`] in place, in the NIC's payload
//! page, and gives it back through a [`ZcReturner`]. It runs either
//!
//! - on the RX thread ([`ZcSink::new`]): each chunk is consumed as it is
//!   delivered and returned at once (the returner batches), or
//! - on a thread of its own ([`ZcSink::with_app`] hands out a [`ZcApp`]):
//!   the RX thread passes chunks over a bounded lock-free queue and the
//!   application returns the pages from its core. A full queue never drops
//!   a chunk: the RX thread keeps it and tries again next round, and since
//!   every chunk the application holds counts against its connection's
//!   window, a slow application closes the window.
//!
//! The iperf3 protocol stays on the RX thread: control connections are
//! read there and their pages returned at once; data streams are counted
//! there and their chunks go to the application like the sink's.

use crate::consume::{ConsumeStats, Consumer, Stream};
use crate::iperf3::{self, Role};
use crate::sink::{SharedIperf3, TcpStats};
use crate::zc::{
    ConnId, ReturnMode, ReturnStats, ZcChunk, ZcConfig, ZcEvent, ZcQueue, ZcReturner, ZcStats,
};
use crossbeam_queue::ArrayQueue;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Settings of a [`ZcSink`].
#[derive(Clone, Debug)]
pub struct ZcSinkConfig {
    /// The engine's settings; its `listen` ports are set from `port` and
    /// `iperf3_port`.
    pub zc: ZcConfig,
    /// The plain sink's port.
    pub port: u16,
    /// Serve iperf3 on this port.
    pub iperf3_port: Option<u16>,
    /// What the application does with the bytes.
    pub consumer: Consumer,
    /// How the application returns pages.
    pub ret: ReturnMode,
    /// Chunks per return call (1..=1024).
    pub recycle_batch: usize,
    /// Connection ids this sink gives the iperf3 server start here (see
    /// [`SinkConfig::id_base`](crate::SinkConfig::id_base)).
    pub id_base: u32,
}

/// Empty polls in a row after which [`ZcApp::run`] yields its core.
pub const IDLE_SPINS: u32 = 256;

/// How long an application goes without new data before it returns the
/// pages it holds short of a full batch. A batch larger than the window
/// would otherwise never fill: the application would wait for data the
/// sender cannot send until pages come back.
pub const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_micros(100);

/// How often the iperf3 server's timers run (cookie, setup and result
/// timeouts: seconds).
const IPERF3_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Chunks the RX thread may have queued to the application thread.
pub const APP_QUEUE: usize = 4096;

/// A chunk on its way to the application thread.
struct AppChunk {
    chunk: ZcChunk,
    /// Check it against the pattern (the plain sink's streams).
    verify: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Sink,
    Iperf3,
}

struct Conn {
    service: Service,
    /// The iperf3 server's name for it.
    id: iperf3::ConnId,
    stream: Stream,
    /// The peer's FIN arrived.
    fin: bool,
    /// We asked the engine to close it.
    closing: bool,
}

/// The sink's connections, by the engine's slot (a lookup per chunk is an
/// index and a generation compare, not a hash).
#[derive(Default)]
struct ConnTable(Vec<Option<(ConnId, Conn)>>);

impl ConnTable {
    fn insert(&mut self, id: ConnId, c: Conn) {
        let slot = id.slot() as usize;
        if self.0.len() <= slot {
            self.0.resize_with(slot + 1, || None);
        }
        self.0[slot] = Some((id, c));
    }
    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        match self.0.get_mut(id.slot() as usize) {
            Some(Some((i, c))) if *i == id => Some(c),
            _ => None,
        }
    }
    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let e = self.0.get_mut(id.slot() as usize)?;
        match e {
            Some((i, _)) if *i == id => e.take().map(|(_, c)| c),
            _ => None,
        }
    }
    fn values(&self) -> impl Iterator<Item = &Conn> {
        self.0.iter().flatten().map(|(_, c)| c)
    }
    fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut Conn)> {
        self.0.iter_mut().flatten().map(|(i, c)| (*i, c))
    }
}

/// The way to the application thread.
struct ToApp {
    queue: Arc<ArrayQueue<AppChunk>>,
    /// Chunks the queue had no room for, in order.
    waiting: VecDeque<AppChunk>,
}

/// The zero-copy sink on one queue. See the module documentation.
pub struct ZcSink {
    q: ZcQueue,
    port: u16,
    iperf3_port: Option<u16>,
    consumer: Consumer,
    conns: ConnTable,
    server: SharedIperf3,
    next_id: iperf3::ConnId,
    stats: TcpStats,
    /// The RX thread's returner: every chunk without an application thread,
    /// iperf3's control bytes with one.
    ret: ZcReturner,
    /// When the last chunk arrived (see [`IDLE_FLUSH`]).
    last_data: Instant,
    /// When the iperf3 server's timers are next run.
    next_iperf3_tick: Instant,
    /// The application thread, if it has one.
    app: Option<ToApp>,
}

fn lock(s: &SharedIperf3) -> std::sync::MutexGuard<'_, iperf3::Iperf3Server> {
    // The server's state stays consistent across a panic elsewhere.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl ZcSink {
    /// A sink on `q` whose application runs on the RX thread.
    pub fn new(
        q: pipeline::Queue,
        cfg: ZcSinkConfig,
        server: SharedIperf3,
    ) -> Result<Self, String> {
        ZcSink::open(q, &cfg, server)
    }

    /// A sink on `q` and its application side, to run on a thread of its
    /// own.
    pub fn with_app(
        q: pipeline::Queue,
        cfg: ZcSinkConfig,
        server: SharedIperf3,
    ) -> Result<(Self, ZcApp), String> {
        let mut sink = ZcSink::open(q, &cfg, server)?;
        let queue = Arc::new(ArrayQueue::new(APP_QUEUE));
        sink.app = Some(ToApp {
            queue: queue.clone(),
            waiting: VecDeque::new(),
        });
        let app = ZcApp {
            from_rx: queue,
            returner: sink.q.engine().returner(cfg.ret, cfg.recycle_batch),
            consumer: cfg.consumer,
            streams: HashMap::new(),
            stats: ConsumeStats::default(),
            timing: AppTiming::default(),
        };
        Ok((sink, app))
    }

    fn open(q: pipeline::Queue, cfg: &ZcSinkConfig, server: SharedIperf3) -> Result<Self, String> {
        if !(1..=1024).contains(&cfg.recycle_batch) {
            return Err(format!(
                "recycle batch {} must be 1..=1024",
                cfg.recycle_batch
            ));
        }
        let mut zc = cfg.zc.clone();
        zc.listen = std::iter::once(cfg.port).chain(cfg.iperf3_port).collect();
        let q = ZcQueue::new(q, zc)?;
        let ret = q.engine().returner(cfg.ret, cfg.recycle_batch);
        Ok(ZcSink {
            q,
            port: cfg.port,
            iperf3_port: cfg.iperf3_port,
            consumer: cfg.consumer,
            conns: ConnTable::default(),
            server,
            next_id: cfg.id_base.wrapping_add(1),
            stats: TcpStats::default(),
            ret,
            last_data: Instant::now(),
            next_iperf3_tick: Instant::now(),
            app: None,
        })
    }

    /// One round: the queue (returned pages reclaimed, frames received,
    /// timers, frames sent), then every event. Returns whether the round
    /// did receive-path work (frames in or out).
    pub fn poll(&mut self, now: Instant) -> bool {
        let sent = self.q.stats().tx_frames;
        let busy = self.q.poll(now) > 0 || self.q.stats().tx_frames != sent;
        let mut events = false;
        while let Some(ev) = self.q.next_event() {
            events = true;
            self.event(ev, now);
        }
        self.flush_to_app();
        if events {
            self.last_data = now;
        } else if self.ret.pending() > 0
            && now.saturating_duration_since(self.last_data) >= IDLE_FLUSH
        {
            self.ret.flush();
        }
        // iperf3 connections are served every round; the server's timers
        // (and a look for its closes) every IPERF3_TICK without them.
        if self.iperf3_port.is_some()
            && (now >= self.next_iperf3_tick
                || self.conns.values().any(|c| c.service == Service::Iperf3))
        {
            self.serve_iperf3(now);
        }
        busy || events
    }

    fn event(&mut self, ev: ZcEvent, now: Instant) {
        match ev {
            ZcEvent::Accepted {
                conn, local_port, ..
            } => {
                let service = if Some(local_port) == self.iperf3_port && local_port != self.port {
                    Service::Iperf3
                } else {
                    Service::Sink
                };
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                self.stats.connections += 1;
                if service == Service::Iperf3 {
                    lock(&self.server).on_accept(id, now);
                }
                self.conns.insert(
                    conn,
                    Conn {
                        service,
                        id,
                        stream: Stream::default(),
                        fin: false,
                        closing: false,
                    },
                );
            }
            ZcEvent::Data { conn, chunk } => self.data(conn, chunk, now),
            ZcEvent::Eof { conn } => {
                let Some(c) = self.conns.get_mut(conn) else {
                    return;
                };
                c.fin = true;
                // The peer is done: so are we, once iperf3 has said its piece
                // (serve_iperf3 closes those).
                if c.service == Service::Sink || lock(&self.server).pending_output(c.id).is_empty()
                {
                    c.closing = true;
                    self.q.engine_mut().close(conn);
                }
            }
            ZcEvent::Closed { conn, reset } => {
                let Some(c) = self.conns.remove(conn) else {
                    return;
                };
                self.stats.closed += 1;
                if reset || !c.fin {
                    self.stats.aborted += 1;
                }
                if c.service == Service::Iperf3 {
                    lock(&self.server).on_close(c.id, now);
                }
            }
        }
    }

    fn data(&mut self, conn: ConnId, chunk: ZcChunk, now: Instant) {
        let len = chunk.len() as u64;
        let Some(c) = self.conns.get_mut(conn) else {
            // Data of a connection never reported accepted: the engine
            // reports in order, so this cannot happen; the page goes back.
            self.ret.give_back(chunk);
            return;
        };
        if c.service == Service::Iperf3 {
            let role = lock(&self.server).on_recv(c.id, chunk.bytes(), now);
            if !matches!(role, Role::Data { .. }) {
                // Control (or a cookie): protocol, read here and returned.
                self.stats.bytes += len;
                self.ret.give_back(chunk);
                return;
            }
            self.stats.iperf3_bytes += len;
        }
        let verify = self.consumer.verify && c.service == Service::Sink;
        match &mut self.app {
            None => {
                let consumer = Consumer {
                    verify,
                    ..self.consumer
                };
                let mut taken = ConsumeStats::default();
                consumer.consume(&mut c.stream, chunk.bytes(), &mut taken);
                self.stats.add_consumed(taken);
                self.ret.give_back(chunk);
            }
            Some(app) => {
                self.stats.bytes += len;
                let c = AppChunk { chunk, verify };
                if !app.waiting.is_empty() {
                    app.waiting.push_back(c);
                } else if let Err(c) = app.queue.push(c) {
                    app.waiting.push_back(c);
                }
            }
        }
    }

    /// Moves chunks the application's queue had no room for; returns
    /// whether none is left waiting.
    pub fn flush_to_app(&mut self) -> bool {
        let Some(app) = &mut self.app else {
            return true;
        };
        while let Some(c) = app.waiting.pop_front() {
            if let Err(c) = app.queue.push(c) {
                app.waiting.push_front(c);
                return false;
            }
        }
        true
    }

    /// The iperf3 server's output and closes for our connections.
    fn serve_iperf3(&mut self, now: Instant) {
        let mut server = lock(&self.server);
        if now >= self.next_iperf3_tick {
            server.poll(now);
            self.next_iperf3_tick = now + IPERF3_TICK;
        }
        let engine = self.q.engine_mut();
        for (conn, c) in self.conns.iter_mut() {
            if c.service != Service::Iperf3 {
                continue;
            }
            let out = server.pending_output(c.id);
            if !out.is_empty() {
                let n = engine.send(conn, out);
                server.sent(c.id, n);
            }
            if c.fin && !c.closing && server.pending_output(c.id).is_empty() {
                c.closing = true;
                engine.close(conn);
            }
        }
        let conns = &self.conns;
        let closes = server.take_closes_if(|id| conns.values().any(|c| c.id == id));
        for id in closes {
            if let Some((conn, c)) = self.conns.iter_mut().find(|(_, c)| c.id == id) {
                if !c.closing {
                    c.closing = true;
                    engine.close(conn);
                }
            }
        }
    }

    /// The sink's counters. With an application thread, `bytes` counts what
    /// was handed to it; its reads and checks come from [`ZcApp::finish`]
    /// through [`ZcSink::merge_app`].
    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Folds the application thread's reads and checks into the sink's
    /// counters (its bytes are counted already).
    pub fn merge_app(&mut self, app: ConsumeStats) {
        self.stats.add_consumed(ConsumeStats { bytes: 0, ..app });
    }

    /// The engine's counters.
    pub fn zc_stats(&self) -> &ZcStats {
        self.q.engine().stats()
    }

    /// Connections the peer may still send on: accepted, its FIN not yet
    /// received. (A connection waiting for the ACK of our FIN is done for
    /// the application; a peer that stops once its own FIN is acknowledged,
    /// as the pair wire's sender does, never sends that ACK, and the
    /// engine gives up on it after its retransmissions.)
    pub fn open_connections(&self) -> usize {
        self.conns.values().filter(|c| !c.fin).count()
    }

    /// Frames the queue has taken off its RX ring (progress, for stop
    /// conditions).
    pub fn frames_handled(&self) -> u64 {
        self.q.stats().rx_frames
    }

    /// The queue's health check (see `driver::recovery`).
    pub fn check(&mut self, now: Instant) -> driver::Health {
        self.q.check(now)
    }

    pub fn queue(&self) -> &ZcQueue {
        &self.q
    }

    /// Ends the sink: chunks still waiting for the application thread come
    /// back, the RX thread's returner is flushed, and the queue is handed
    /// back with every page returned to its pools, with what the RX
    /// thread's returner did in all. Join the application thread first (its
    /// returner must have flushed).
    pub fn finish(mut self) -> (pipeline::Queue, ReturnStats) {
        if let Some(app) = self.app.take() {
            // The application is gone: what it did not take goes back
            // through the RX thread's returner.
            let queue = app.queue;
            for c in app
                .waiting
                .into_iter()
                .chain(std::iter::from_fn(|| queue.pop()))
            {
                self.ret.give_back(c.chunk);
            }
        }
        self.ret.flush();
        let returns = self.ret.stats();
        (self.q.into_queue(), returns)
    }
}

/// The application side of a [`ZcSink`] (see [`ZcSink::with_app`]): moves
/// to its own thread, reads every chunk in place and returns it.
pub struct ZcApp {
    from_rx: Arc<ArrayQueue<AppChunk>>,
    returner: ZcReturner,
    consumer: Consumer,
    streams: HashMap<ConnId, Stream>,
    stats: ConsumeStats,
    timing: AppTiming,
}

/// What an application thread's [`ZcApp::run`] cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppTiming {
    /// Wall time of the polls that took chunks.
    pub busy_ns: u64,
    /// Wall time of the whole run.
    pub loop_ns: u64,
    /// The thread's CPU time over the run.
    pub cpu_ns: u64,
}

/// What [`ZcApp::finish`] reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppReport {
    pub consumed: ConsumeStats,
    pub returns: ReturnStats,
    pub timing: AppTiming,
}

impl ZcApp {
    /// Consumes and returns whatever the RX thread has queued; returns the
    /// chunks taken.
    pub fn poll(&mut self) -> usize {
        let mut n = 0;
        while let Some(AppChunk { chunk, verify }) = self.from_rx.pop() {
            let consumer = Consumer {
                verify,
                ..self.consumer
            };
            let stream = self.streams.entry(chunk.conn()).or_default();
            consumer.consume(stream, chunk.bytes(), &mut self.stats);
            self.returner.give_back(chunk);
            n += 1;
        }
        n
    }

    /// Runs until `stop` is set and the queue is empty: busy-polls, and
    /// yields its core after [`IDLE_SPINS`] empty polls in a row (an
    /// application waiting for completions would sleep; a thread sharing
    /// the core, such as the pair wire's sender, gets to run). After
    /// [`IDLE_FLUSH`] without data it returns what it holds short of a
    /// batch. Times its busy polls and its CPU time, for [`ZcApp::finish`].
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) {
        use std::sync::atomic::Ordering;
        let cpu0 = pipeline::os::thread_cpu_ns();
        let loop0 = Instant::now();
        let mut idle = 0u32;
        let mut last_data = loop0;
        loop {
            let t0 = Instant::now();
            if self.poll() > 0 {
                let t1 = Instant::now();
                self.timing.busy_ns += (t1 - t0).as_nanos() as u64;
                last_data = t1;
                idle = 0;
            } else if stop.load(Ordering::Acquire) && self.from_rx.is_empty() {
                break;
            } else {
                if self.returner.pending() > 0 && t0 - last_data >= IDLE_FLUSH {
                    self.returner.flush();
                }
                idle += 1;
                if idle >= IDLE_SPINS {
                    std::thread::yield_now();
                    idle = 0;
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        self.timing.loop_ns += loop0.elapsed().as_nanos() as u64;
        self.timing.cpu_ns += pipeline::os::thread_cpu_ns() - cpu0;
    }

    /// Flushes the returner: what the application read, how it returned
    /// the pages, and what its thread cost.
    pub fn finish(mut self) -> AppReport {
        self.poll();
        self.returner.flush();
        AppReport {
            consumed: self.stats,
            returns: self.returner.stats(),
            timing: self.timing,
        }
    }
}
