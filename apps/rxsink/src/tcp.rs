//! `--mode tcp`: the smoltcp stack on every queue (ARP, ping, TCP listeners
//! on `--port` and the iperf3 port); stream bytes are counted in place and,
//! with `--verify`, each one is checked against the pattern.
//!
//! The RX thread runs the stack (and the simulator between polls in
//! stepped mode) and busy-polls. Its cost figures:
//! - `busy_seconds`: the wall time of the rounds that did receive-path work:
//!   frames received, or frames sent (ACKs, window updates from the timer)
//!   (ring poll, presentation, smoltcp, the sink's reads, TX).
//! - `busy_cpu_seconds` / `cpu_seconds_per_gb`: the receive path's CPU
//!   time: the thread's CPU time times the busy rounds' share of the loop's
//!   wall time (so time the thread spent preempted is not counted). Idle
//!   rounds and the simulator are not in it.
//! - `rx_thread_cpu_seconds` / `thread_cpu_seconds_per_gb`: everything the
//!   thread burned, idle spinning and a stepped simulator included.

use crate::capture::Capture;
use crate::cli::Args;
use crate::cli::ZcReturn;
use crate::error::RunError;
use crate::raw::{describe, report_errors};
use crate::summary;
use driver::Health;
use pipeline::os as signals;
use pipeline::port::Port;
use stack::consume::{Consumer, Copies};
use stack::peer::{peer_ip, smol_at, Peer, PeerConfig, PEER_MAC};
use stack::queue::{self, PortDevice};
use stack::segstats::SegCounters;
use stack::smoltcp::time::Instant as SmolInstant;
use stack::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use stack::zc::{ReturnMode, ZcConfig};
use stack::zcsink::{AppReport, ZcApp, ZcSink, ZcSinkConfig};
use stack::{DeviceConfig, SenderConfig, SinkConfig, SocketMemory, TcpSink};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn smol_now(start: Instant) -> SmolInstant {
    smol_at(start, Instant::now())
}

/// One queue's device (the smoltcp stack's).
type Dev = PortDevice;

/// One queue's receive stack: smoltcp (`--copies 2|1`) or the zero-copy
/// engine (`--copies 0`).
enum QueueStack {
    Smol(Box<Dev>),
    Zc(Box<ZcSink>),
}

/// One queue's stack as the loop drives it, with the application's part.
enum Round<'s, 'm> {
    Smol(&'s mut TcpSink<'m>, &'s mut Dev),
    Zc(&'s mut ZcSink),
}

impl Round<'_, '_> {
    /// One round at `t0`: whether it did receive-path work (frames in, or
    /// frames out: ACKs and window updates the timers send).
    fn poll(&mut self, start: Instant, t0: Instant) -> bool {
        match self {
            Round::Smol(sink, qdev) => {
                let built = qdev.tx_stats().frames;
                let received = sink.poll(smol_at(start, t0), *qdev);
                qdev.flush();
                received || qdev.tx_stats().frames != built
            }
            Round::Zc(z) => z.poll(t0),
        }
    }
    fn frames_handled(&self) -> u64 {
        match self {
            Round::Smol(_, d) => d.rx_ring().stats().frames_handled(),
            Round::Zc(z) => z.frames_handled(),
        }
    }
    fn check(&mut self, now: Instant) -> Health {
        match self {
            Round::Smol(_, d) => d.check(now),
            Round::Zc(z) => z.check(now),
        }
    }
    fn stats(&self) -> stack::TcpStats {
        match self {
            Round::Smol(s, _) => *s.stats(),
            Round::Zc(z) => *z.stats(),
        }
    }
    fn open_connections(&self) -> usize {
        match self {
            Round::Smol(s, _) => s.open_connections(),
            Round::Zc(z) => z.open_connections(),
        }
    }
}

/// Stop conditions and totals shared by the queues' threads.
struct Shared {
    stop: AtomicBool,
    /// Connections ended, all queues.
    closed: AtomicU64,
    /// Connections open, per queue.
    open: Vec<AtomicU64>,
    /// Resident set (KiB) once every queue's sockets and pools exist.
    rss_start: AtomicU64,
    /// Queues that have received everything a replayed file brought (see
    /// `Port::wire_drained`); all of them: the run is over.
    drained: AtomicU64,
}

/// What one queue's loop measured.
#[derive(Default)]
struct LoopResult {
    /// Wall time of the rounds that received frames.
    busy_ns: u64,
    /// Wall time of the whole loop.
    loop_ns: u64,
    /// When the loop began: the queue's stack was set up (its socket
    /// memory populated) and it started receiving.
    loop_start: Option<Instant>,
    /// The thread's CPU time over the loop.
    cpu_ns: u64,
    stats: stack::TcpStats,
    /// Why the loop gave up, if it did.
    error: Option<String>,
}

impl LoopResult {
    /// CPU time of the busy rounds: the thread's CPU time times the busy
    /// rounds' share of the loop's wall time. Wall time alone would count
    /// the time the thread was preempted inside a round (on a loaded machine
    /// that can exceed the thread's whole CPU time); the share assumes
    /// preemption strikes busy and idle rounds alike.
    fn busy_cpu_ns(&self) -> u64 {
        if self.loop_ns == 0 {
            return 0;
        }
        (self.cpu_ns as u128 * self.busy_ns.min(self.loop_ns) as u128 / self.loop_ns as u128) as u64
    }
}

/// What every queue's loop shares.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    args: &'a Args,
    start: Instant,
    shared: &'a Shared,
    /// Set when the pair wire's sender is done.
    peer_done: Option<&'a AtomicBool>,
    /// The simulated NIC, to learn when a replayed file is over.
    nic: Option<&'a hw_sim::SimNic>,
}

/// The stepped simulator, driven by the one queue's loop.
type Stepper<'a> = Option<&'a mut Port>;

/// The stack's loop on one queue: (step the simulator,) poll the stack,
/// flush TX; until a stop condition. Queue 0 prints the stats lines. Every
/// 64 rounds it runs the queue's health check (`driver::recovery`): after
/// a device reset or a stall every queue's rings restart, and the first
/// queue to notice brings the device up again.
fn sink_loop(
    ctx: Ctx<'_>,
    q: usize,
    mut st: Round<'_, '_>,
    mut stepper: Stepper<'_>,
) -> LoopResult {
    let Ctx {
        args,
        start,
        shared,
        peer_done,
        nic,
    } = ctx;
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let cpu0 = signals::thread_cpu_ns();
    let loop0 = Instant::now();
    let mut r = LoopResult::default();
    let mut next_report = start + Duration::from_secs(1);
    let mut last = (start, 0u64);
    let mut closed_seen = 0u64;
    let mut iter = 0u64;
    let mut drained_here = false;
    loop {
        if let Some(port) = stepper.as_deref_mut() {
            port.step(args.batch);
        }
        // Read before the poll: a replayed file is over for this queue once
        // the device has placed all of it and a round after that is idle.
        let drained =
            (!drained_here && nic.is_some_and(|n| n.wire_drained())).then(|| st.frames_handled());
        // One clock read per round: the stack's time and the busy timer's
        // start.
        let t0 = Instant::now();
        if st.poll(start, t0) {
            r.busy_ns += t0.elapsed().as_nanos() as u64;
        } else if drained.is_some_and(|p| p == st.frames_handled()) {
            drained_here = true;
            shared.drained.fetch_add(1, Ordering::Relaxed);
        }
        iter += 1;
        if !iter.is_multiple_of(64) {
            continue;
        }
        if q == 0 && iter == 64 {
            // Every allocation is done by the first round: from here on the
            // resident set must stay flat.
            shared
                .rss_start
                .store(signals::rss_kib(), Ordering::Relaxed);
        }
        if let Health::Failed(e) = st.check(Instant::now()) {
            r.error = Some(format!("queue {q}: the device did not come back: {e}"));
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let stats = st.stats();
        shared
            .closed
            .fetch_add(stats.closed - closed_seen, Ordering::Relaxed);
        closed_seen = stats.closed;
        shared.open[q].store(st.open_connections() as u64, Ordering::Relaxed);
        let idle = shared.open.iter().all(|o| o.load(Ordering::Relaxed) == 0);
        let closed = shared.closed.load(Ordering::Relaxed);
        if shared.stop.load(Ordering::Relaxed)
            || signals::stop_requested()
            || args.until_closed.is_some_and(|n| closed >= n && idle)
            || (peer_done.is_some_and(|d| d.load(Ordering::Acquire)) && idle)
            || shared.drained.load(Ordering::Relaxed) == shared.open.len() as u64
        {
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if q == 0 && now >= next_report && !args.quiet {
            let secs = (now - last.0).as_secs_f64();
            eprintln!(
                "rxsink: {:6.1}s {:7.3} Gbit/s (queue 0) tcp: {} open, {} closed (all queues), {} bytes, {} verified, {} mismatches (queue 0)",
                (now - start).as_secs_f64(),
                (stats.bytes - last.1) as f64 * 8.0 / secs / 1e9,
                shared.open.iter().map(|o| o.load(Ordering::Relaxed)).sum::<u64>(),
                closed,
                stats.bytes,
                stats.verified,
                stats.mismatches,
            );
            last = (now, stats.bytes);
            next_report = now + Duration::from_secs(1);
        }
    }
    r.cpu_ns = signals::thread_cpu_ns() - cpu0;
    r.loop_ns = loop0.elapsed().as_nanos() as u64;
    r.loop_start = Some(loop0);
    r.stats = st.stats();
    r
}

/// Runs `rx` (the RX thread's part) with the application's part of the
/// zero-copy sink on a thread of its own, pinned to `core`; returns what
/// `rx` returned and the application's report.
fn with_app_thread<R>(
    mut app: ZcApp,
    core: usize,
    rx: impl FnOnce() -> R,
) -> Result<(R, AppReport), RunError> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("app".into())
            .spawn_scoped(s, || {
                if let Err(e) = pipeline::pin_current_thread(core) {
                    tracing::warn!("application thread: {e}");
                }
                app.run(&stop);
                app.finish()
            })
            .map_err(|e| RunError::Other(format!("cannot start the application thread: {e}")))?;
        let r = rx();
        stop.store(true, Ordering::Release);
        let a = h
            .join()
            .map_err(|_| RunError::Other("the application thread panicked".into()))?;
        Ok((r, a))
    })
}

/// A queue's stack and its loop, on the current thread (the smoltcp
/// sink's socket memory is made here, on the thread that uses it).
fn run_queue(
    ctx: Ctx<'_>,
    q: usize,
    cfg: SinkConfig,
    server: stack::sink::SharedIperf3,
    qs: &mut QueueStack,
    stepper: Stepper<'_>,
) -> Result<LoopResult, String> {
    let mut r = match qs {
        QueueStack::Smol(qdev) => {
            let services = if cfg.iperf3_port.is_some() { 2 } else { 1 };
            let mut mem =
                SocketMemory::for_sockets(services * cfg.max_conns, cfg.rx_buf, cfg.tx_buf)
                    .map_err(|e| format!("socket memory: {e}"))?;
            let mut sink =
                TcpSink::with_iperf3(cfg, &mut mem, &mut **qdev, smol_now(ctx.start), server)?;
            sink_loop(ctx, q, Round::Smol(&mut sink, qdev), stepper)
        }
        QueueStack::Zc(z) => sink_loop(ctx, q, Round::Zc(z), stepper),
    };
    match r.error.take() {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// The smoltcp devices of the port's queues (`--copies 2|1`): segment
/// counters, ARP roles, `--pcap-out` and `--wb-log` set up.
fn smoltcp_queues(
    args: &Args,
    port: &mut Port,
) -> Result<(Vec<QueueStack>, Option<SharedCapture>), RunError> {
    let device = DeviceConfig {
        mtu: args.mtu,
        rx_batch: args.batch,
        ..DeviceConfig::default()
    };
    let mut devs: Vec<Dev> = port
        .take_queues()
        .into_iter()
        .map(|q| queue::from_port(q, device))
        .collect::<Result<_, _>>()
        .map_err(RunError::Other)?;
    let queues = devs.len();
    for d in &mut devs {
        // Retransmitted / out-of-order / duplicate segment counters.
        d.track_segments();
    }
    if queues > 1 {
        for (d, role) in devs.iter_mut().zip(stack::arp_roles(queues)) {
            d.set_arp_role(role);
        }
    }
    let capture = match args.pcap_out.as_deref() {
        Some(path) => {
            let shared = Arc::new(std::sync::Mutex::new(Capture::create(path)?));
            let c = shared.clone();
            devs[0].set_capture(Box::new(move |frame: &[u8]| {
                if let Ok(mut c) = c.lock() {
                    c.frame(frame);
                }
            }));
            Some(shared)
        }
        None => None,
    };
    if let Some(path) = &args.wb_log {
        let q = devs[0].rx_ring().queue();
        devs[0]
            .rx_ring_mut()
            .set_wb_observer(Some(crate::wblog::observer(path, q)?));
    }
    let stacks = devs
        .into_iter()
        .map(|d| QueueStack::Smol(Box::new(d)))
        .collect();
    Ok((stacks, capture))
}

/// The zero-copy sinks of the port's queues (`--copies 0`), and the
/// application side when it runs on a core of its own (`--cores A,B`).
fn zc_queues(
    args: &Args,
    port: &mut Port,
    sink: &SinkConfig,
    server: &stack::sink::SharedIperf3,
) -> Result<(Vec<QueueStack>, Option<ZcApp>), RunError> {
    let mut app = None;
    let mut stacks = Vec::new();
    for (q, queue) in port.take_queues().into_iter().enumerate() {
        let cfg = ZcSinkConfig {
            zc: ZcConfig {
                mac: sink.mac,
                ip: sink.ip.address().octets(),
                mtu: args.mtu,
                max_conns: args.max_conns,
                rcv_buf: args.tcp_buf,
                // RSS steers ARP to queue 0: it answers for all.
                answer_arp: q == 0,
                ..ZcConfig::default()
            },
            port: sink.port,
            iperf3_port: sink.iperf3_port,
            consumer: Consumer {
                touch: args.touch,
                verify: args.verify,
            },
            ret: match args.zc_return {
                ZcReturn::Ring => ReturnMode::Ring,
                ZcReturn::Locked => ReturnMode::Locked,
            },
            recycle_batch: args.recycle_batch,
            id_base: (q as u32) << 24,
        };
        let z = if args.cores.is_some() {
            let (z, a) = ZcSink::with_app(queue, cfg, server.clone()).map_err(RunError::Other)?;
            app = Some(a);
            z
        } else {
            ZcSink::new(queue, cfg, server.clone()).map_err(RunError::Other)?
        };
        stacks.push(QueueStack::Zc(Box::new(z)));
    }
    Ok((stacks, app))
}

type SharedCapture = Arc<std::sync::Mutex<Capture>>;

pub fn run(args: &Args) -> Result<serde_json::Value, RunError> {
    let mut port = Port::open(&args.device_spec(), &args.port_config())?;
    let ip = args.tcp_ip();
    let cidr = Ipv4Cidr::new(Ipv4Address::from(ip.addr), ip.prefix);
    let start = Instant::now();
    let sink_cfg = SinkConfig {
        mac: port.mac(),
        ip: cidr,
        port: args.port,
        iperf3_port: (args.iperf3_port != 0).then_some(args.iperf3_port),
        max_conns: args.max_conns,
        rx_buf: args.tcp_buf,
        verify: args.verify,
        copies: args.copies,
        touch: args.touch,
        seed: args.seed,
        ..SinkConfig::default()
    };
    let server = stack::sink::iperf3_server();
    let (mut stacks, capture, app) = if args.copies == Copies::Zero {
        let (stacks, app) = zc_queues(args, &mut port, &sink_cfg, &server)?;
        (stacks, None, app)
    } else {
        let (stacks, capture) = smoltcp_queues(args, &mut port)?;
        (stacks, capture, None)
    };
    let queues = stacks.len();

    // The far side of the pair wire: its own NIC, driver and sender.
    let peer = match port.take_pair_end() {
        Some(end) => {
            let cfg = PeerConfig {
                sender: SenderConfig {
                    mac: PEER_MAC,
                    ip: Ipv4Cidr::new(peer_ip(cidr), ip.prefix),
                    dst: cidr.address(),
                    port: args.port,
                    conns: args.pair_conns,
                    bytes: args.pair_bytes,
                    seed: args.seed.wrapping_add(1),
                    ..SenderConfig::default()
                },
                device: DeviceConfig {
                    mtu: args.mtu,
                    ..DeviceConfig::default()
                },
            };
            Some(
                Peer::spawn(end, cfg)
                    .map_err(|e| RunError::Other(format!("cannot start the pair peer: {e}")))?,
            )
        }
        None => None,
    };

    port.start()?;
    let shared = Shared {
        stop: AtomicBool::new(false),
        closed: AtomicU64::new(0),
        open: (0..queues).map(|_| AtomicU64::new(0)).collect(),
        rss_start: AtomicU64::new(0),
        drained: AtomicU64::new(0),
    };
    let nic = port.sim().cloned();
    let ctx = Ctx {
        args,
        start,
        shared: &shared,
        peer_done: peer.as_ref().map(Peer::done_flag),
        nic: nic.as_deref(),
    };
    let mut app_result = None;
    let results: Vec<Result<LoopResult, String>> = if queues == 1 {
        if let Some(core) = args.core.or(args.cores.map(|c| c.rx)) {
            pipeline::pin_current_thread(core).map_err(RunError::Usage)?;
        }
        let stack = &mut stacks[0];
        let r = match (app, args.cores) {
            (Some(app), Some(cores)) => {
                let (r, a) = with_app_thread(app, cores.app, || {
                    let r = run_queue(
                        ctx,
                        0,
                        sink_cfg.clone(),
                        server.clone(),
                        stack,
                        Some(&mut port),
                    );
                    // The chunks still waiting go over before the application stops.
                    let until = Instant::now() + Duration::from_secs(1);
                    while let QueueStack::Zc(z) = stack {
                        if z.flush_to_app() || Instant::now() >= until {
                            break;
                        }
                    }
                    r
                })?;
                app_result = Some(a);
                r
            }
            _ => run_queue(
                ctx,
                0,
                sink_cfg.clone(),
                server.clone(),
                stack,
                Some(&mut port),
            ),
        };
        vec![r]
    } else {
        stage_queues(ctx, &mut stacks, &sink_cfg, &server)
    };
    // The transfer is timed over the queues' loops: from the first one's
    // start to the last one's end. Setting the stacks up (populating
    // max_conns rings of --tcp-buf each per service, 0.5 GiB at 16 MiB) is
    // startup, reported as setup_seconds; unmapping them again is left out.
    let loops = || results.iter().filter_map(|r| r.as_ref().ok());
    let ready = loops().filter_map(|r| r.loop_start).min().unwrap_or(start);
    let ended = loops()
        .filter_map(|r| r.loop_start.map(|s| s + Duration::from_nanos(r.loop_ns)))
        .max()
        .unwrap_or_else(Instant::now);
    let setup_seconds = ready.saturating_duration_since(start).as_secs_f64();
    let seconds = ended.saturating_duration_since(ready).as_secs_f64();
    let rss_start = shared.rss_start.load(Ordering::Relaxed);
    let rss_end = signals::rss_kib();

    // Orderly stop: the peer (it stops on its own once done), the device,
    // then the rings give every buffer back.
    let peer_result = peer.map(Peer::join);
    port.stop();
    let mut first_err = None;
    let mut tcp = stack::TcpStats::default();
    let (mut busy_ns, mut busy_cpu_ns, mut cpu_ns) = (0u64, 0u64, 0u64);
    let mut back = Vec::with_capacity(queues);
    let (mut packets, mut bytes, mut hbo) = (0u64, 0u64, 0u64);
    let mut per_queue = Vec::new();
    let mut present_all = stack::frame::PresentStats::default();
    let mut segments = SegCounters::default();
    let mut segments_per_conn = Vec::new();
    let mut zc = None;
    for (q, (qs, r)) in stacks.into_iter().zip(results).enumerate() {
        let mut r = r.unwrap_or_else(|e| {
            first_err.get_or_insert(e);
            LoopResult::default()
        });
        match qs {
            QueueStack::Smol(mut qdev) => {
                if let Some(s) = qdev.seg_stats() {
                    segments.add(s.total());
                    for (k, c) in s.per_conn() {
                        segments_per_conn.push(summary::ConnSegments {
                            counters: c,
                            queue: q as u32,
                            local_port: k.local_port,
                            remote: format!("{}:{}", Ipv4Address::from(k.remote_ip), k.remote_port),
                        });
                    }
                }
                drop(qdev.rx_ring_mut().set_wb_observer(None)); // flushes --wb-log
                let present = *qdev.present_stats();
                present_all += present;
                let tx_side = *qdev.tx_stats();
                let arp = *qdev.arp_stats();
                back.extend(queue::into_port(*qdev));
                per_queue.push((r, present, tx_side, arp));
            }
            QueueStack::Zc(mut z) => {
                if let Some(a) = &app_result {
                    z.merge_app(a.consumed);
                }
                r.stats = *z.stats();
                let engine = *z.zc_stats();
                segments.add(&engine.seg_counters());
                let (queue, mut returns) = z.finish();
                if let Some(a) = &app_result {
                    returns += a.returns;
                }
                zc.get_or_insert_with(summary::ZcTotals::default)
                    .add(&engine, &returns);
                back.push(queue);
                per_queue.push((
                    r,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                ));
            }
        }
    }
    // The application thread's work is receive-path work too: its busy
    // share of its CPU time joins the RX threads'.
    let app_cpu = app_result.map(|a| {
        let t = a.timing;
        let busy = LoopResult {
            busy_ns: t.busy_ns,
            loop_ns: t.loop_ns,
            cpu_ns: t.cpu_ns,
            ..LoopResult::default()
        };
        busy_cpu_ns += busy.busy_cpu_ns();
        cpu_ns += t.cpu_ns;
        summary::AppThread {
            cpu_seconds: t.cpu_ns as f64 / 1e9,
            busy_seconds: t.busy_ns as f64 / 1e9,
            busy_cpu_seconds: busy.busy_cpu_ns() as f64 / 1e9,
        }
    });
    let (name, sim_mode, wire_stats) = describe(&port);
    let report = port.shutdown(back);
    let (xdp_mode, xdp_counters) = summary::xdp(&report);
    report_errors(&report);
    let mut all_rx = driver::RxStats::default();
    let mut per_queue_out = Vec::new();
    for (qr, (r, present, tx, arp)) in report.queues.iter().zip(per_queue) {
        let ring = qr.rx;
        all_rx += ring;
        packets += ring.packets;
        bytes += ring.bytes;
        hbo += ring.hbo;
        busy_ns += r.busy_ns;
        busy_cpu_ns += r.busy_cpu_ns();
        cpu_ns += r.cpu_ns;
        let t = r.stats;
        tcp += t;
        per_queue_out.push(summary::TcpQueue {
            queue: qr.queue,
            packets: ring.packets,
            connections: t.connections,
            bytes: t.bytes,
            verified: t.verified,
            mismatches: t.mismatches,
            busy_seconds: r.busy_ns as f64 / 1e9,
            busy_cpu_seconds: r.busy_cpu_ns() as f64 / 1e9,
            rx_restarts: ring.restarts,
            rx_restart_reclaimed: ring.restart_reclaimed,
            present,
            tx,
            arp: summary::Arp {
                shared: arp.shared,
                inbox_full: arp.inbox_full,
                received: arp.received,
            },
            leaks: queue::Leaks {
                pages: qr.leaked_pages,
                headers: qr.leaked_headers,
                tx_buffers: qr.leaked_tx_buffers,
            },
        });
    }
    if let Some(e) = first_err {
        return Err(RunError::Other(e));
    }
    // The device (and its capture callback) is gone: the writer is ours.
    let pcap_out = capture
        .and_then(Arc::into_inner)
        .and_then(|m| m.into_inner().ok())
        .map(Capture::finish);
    let gb = tcp.bytes as f64 / 1e9;
    let per_gb = |ns: u64| if gb > 0.0 { ns as f64 / 1e9 / gb } else { 0.0 };
    let peer = peer_result.map(|p| match p {
        Ok(p) => summary::Peer::Done {
            ip: peer_ip(cidr).to_string(),
            queued: p.sent.queued,
            finished: p.sent.finished,
            failed: p.sent.failed,
            leaks: p.leaks,
            tx: summary::PeerTx {
                frames: p.tx.frames,
                dropped: p.tx.dropped,
                dropped_no_buffer: p.tx.dropped_no_buffer,
                dropped_ring_full: p.tx.dropped_ring_full,
                dropped_too_long: p.tx.dropped_too_long,
                busy: p.tx.busy,
                sim_tx_dropped: p.sim_tx_dropped,
            },
            segments: p.segments,
        },
        Err(error) => summary::Peer::Failed { error },
    });
    let iperf3 = server.lock().map(|s| s.stats()).ok();
    let summary = summary::TcpRun {
        device: name,
        xdp_mode,
        xdp: xdp_counters,
        wire: sim_mode.as_ref().map(|_| args.wire.to_string()),
        mode: "tcp",
        ip: ip.to_string(),
        port: args.port,
        queues,
        header_split: args.header_split.to_string(),
        sim_mode,
        gro: args.gro,
        mtu: args.mtu,
        batch: args.batch,
        ring_size: args.ring_size,
        packets,
        bytes,
        setup_seconds,
        seconds,
        gbps: tcp.bytes as f64 * 8.0 / seconds / 1e9,
        rx_thread_cpu_seconds: cpu_ns as f64 / 1e9,
        thread_cpu_seconds_per_gb: per_gb(cpu_ns),
        busy_seconds: busy_ns as f64 / 1e9,
        busy_cpu_seconds: busy_cpu_ns as f64 / 1e9,
        cpu_seconds_per_gb: per_gb(busy_cpu_ns),
        tcp: summary::Tcp {
            copies: args.copies,
            touch: args.touch,
            connections: tcp.connections,
            closed: tcp.closed,
            aborted: tcp.aborted,
            bytes: tcp.bytes,
            verify: args.verify,
            verified: tcp.verified,
            mismatches: tcp.mismatches,
            iperf3_bytes: tcp.iperf3_bytes,
            touched: tcp.touched,
            segments,
            segments_per_conn,
        },
        app_thread: app_cpu,
        zc: zc.map(|mut z| {
            z.return_mode = args.zc_return.to_string();
            z.recycle_batch = args.recycle_batch;
            z
        }),
        iperf3: iperf3.map(|s| summary::Iperf3 {
            tests_completed: s.tests_completed,
            tests_failed: s.tests_failed,
            refused_tests: s.refused_tests,
            rejected_connections: s.rejected_connections,
            last_test_bytes: s.last_test.as_ref().map(|t| t.bytes),
            last_test_streams: s.last_test.as_ref().map(|t| t.streams.len()),
        }),
        present: present_all,
        per_queue: per_queue_out,
        device_resets: report.recovery.device_resets,
        queue_stalls: report.recovery.queue_stalls,
        wire_drained: shared.drained.load(Ordering::Relaxed) == shared.open.len() as u64,
        sim_faults_injected: report.injected,
        drops: summary::drops(&all_rx, report.hw.missed_packets),
        hbo,
        dma_faults: report.dma_faults(),
        sim: report.sim,
        hw: (&report).into(),
        peer,
        wire_stats,
        pcap_out: pcap_out.map(Into::into),
        memory: summary::Memory {
            rss_kib_start: rss_start,
            rss_kib_end: rss_end,
        },
        leaked_pages: report.leaked_pages(),
        leaked_headers: report.leaked_headers(),
        leaked_tx_buffers: report.leaked_tx_buffers(),
    };
    serde_json::to_value(summary).map_err(|e| RunError::Other(e.to_string()))
}

/// `--queues N`: one pinned thread per queue (queue i on core --core + i),
/// each with its own sink; one queue ending (or failing) stops the others.
fn stage_queues(
    ctx: Ctx<'_>,
    devs: &mut [QueueStack],
    sink_cfg: &SinkConfig,
    server: &stack::sink::SharedIperf3,
) -> Vec<Result<LoopResult, String>> {
    pipeline::stage::per_queue(devs, ctx.args.core.unwrap_or(0), |q, qdev, _core| {
        let cfg = SinkConfig {
            id_base: (q as u32) << 24,
            seed: sink_cfg.seed.wrapping_add(q as u64),
            ..sink_cfg.clone()
        };
        let r = run_queue(ctx, q, cfg, server.clone(), qdev, None);
        ctx.shared.stop.store(true, Ordering::Relaxed);
        r
    })
    .into_iter()
    .map(|r| r.and_then(|r| r))
    .collect()
}
