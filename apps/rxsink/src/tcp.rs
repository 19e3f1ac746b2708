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
use crate::error::RunError;
use crate::raw::{describe, report_errors};
use crate::summary;
use driver::Health;
use pipeline::os as signals;
use pipeline::port::Port;
use stack::peer::{peer_ip, smol_at, Peer, PeerConfig, PEER_MAC};
use stack::queue::{self, PortDevice};
use stack::segstats::SegCounters;
use stack::smoltcp::time::Instant as SmolInstant;
use stack::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use stack::{DeviceConfig, SenderConfig, SinkConfig, SocketMemory, TcpSink};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn smol_now(start: Instant) -> SmolInstant {
    smol_at(start, Instant::now())
}

/// One queue's device.
type Dev = PortDevice;

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
    sink: &mut TcpSink<'_>,
    qdev: &mut Dev,
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
    let progress = |qdev: &Dev| qdev.rx_ring().stats().frames_handled();
    loop {
        if let Some(port) = stepper.as_deref_mut() {
            port.step(args.batch);
        }
        // Read before the poll: a replayed file is over for this queue once
        // the device has placed all of it and a round after that is idle.
        let drained =
            (!drained_here && nic.is_some_and(|n| n.wire_drained())).then(|| progress(qdev));
        // One clock read per round: the stack's time and the busy timer's
        // start.
        let t0 = Instant::now();
        let built = qdev.tx_stats().frames;
        let received = sink.poll(smol_at(start, t0), qdev);
        qdev.flush();
        // Receive-path work: frames in, or frames out (ACKs and window
        // updates the timer sends in rounds without frames).
        if received || qdev.tx_stats().frames != built {
            r.busy_ns += t0.elapsed().as_nanos() as u64;
        } else if drained.is_some_and(|p| p == progress(qdev)) {
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
        if let Health::Failed(e) = qdev.check(Instant::now()) {
            r.error = Some(format!("queue {q}: the device did not come back: {e}"));
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        let st = *sink.stats();
        shared
            .closed
            .fetch_add(st.closed - closed_seen, Ordering::Relaxed);
        closed_seen = st.closed;
        shared.open[q].store(sink.open_connections() as u64, Ordering::Relaxed);
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
                (st.bytes - last.1) as f64 * 8.0 / secs / 1e9,
                shared.open.iter().map(|o| o.load(Ordering::Relaxed)).sum::<u64>(),
                closed,
                st.bytes,
                st.verified,
                st.mismatches,
            );
            last = (now, st.bytes);
            next_report = now + Duration::from_secs(1);
        }
    }
    r.cpu_ns = signals::thread_cpu_ns() - cpu0;
    r.loop_ns = loop0.elapsed().as_nanos() as u64;
    r.stats = *sink.stats();
    r
}

/// A queue's sink, its socket memory and its loop, on the current thread.
fn run_queue(
    ctx: Ctx<'_>,
    q: usize,
    cfg: SinkConfig,
    server: stack::sink::SharedIperf3,
    qdev: &mut Dev,
    stepper: Stepper<'_>,
) -> Result<LoopResult, String> {
    let start = ctx.start;
    let services = if cfg.iperf3_port.is_some() { 2 } else { 1 };
    let mut mem = SocketMemory::for_sockets(services * cfg.max_conns, cfg.rx_buf, cfg.tx_buf)
        .map_err(|e| format!("socket memory: {e}"))?;
    let mut sink = TcpSink::with_iperf3(cfg, &mut mem, qdev, smol_now(start), server)?;
    let mut r = sink_loop(ctx, q, &mut sink, qdev, stepper);
    match r.error.take() {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

pub fn run(args: &Args) -> Result<serde_json::Value, RunError> {
    let mut port = Port::open(&args.device_spec(), &args.port_config())?;
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
        seed: args.seed,
        ..SinkConfig::default()
    };

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
    let server = stack::sink::iperf3_server();
    let ctx = Ctx {
        args,
        start,
        shared: &shared,
        peer_done: peer.as_ref().map(Peer::done_flag),
        nic: nic.as_deref(),
    };
    let results: Vec<Result<LoopResult, String>> = if queues == 1 {
        if let Some(core) = args.core {
            pipeline::pin_current_thread(core).map_err(RunError::Usage)?;
        }
        let r = run_queue(
            ctx,
            0,
            sink_cfg.clone(),
            server.clone(),
            &mut devs[0],
            Some(&mut port),
        );
        vec![r]
    } else {
        stage_queues(ctx, &mut devs, &sink_cfg, &server)
    };
    let seconds = start.elapsed().as_secs_f64();
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
    for (q, (mut qdev, r)) in devs.into_iter().zip(results).enumerate() {
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
        let r = r.unwrap_or_else(|e| {
            first_err.get_or_insert(e);
            LoopResult::default()
        });
        let present = *qdev.present_stats();
        present_all += present;
        let tx_side = *qdev.tx_stats();
        let arp = *qdev.arp_stats();
        back.extend(queue::into_port(qdev));
        per_queue.push((r, present, tx_side, arp));
    }
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
        seconds,
        gbps: tcp.bytes as f64 * 8.0 / seconds / 1e9,
        rx_thread_cpu_seconds: cpu_ns as f64 / 1e9,
        thread_cpu_seconds_per_gb: per_gb(cpu_ns),
        busy_seconds: busy_ns as f64 / 1e9,
        busy_cpu_seconds: busy_cpu_ns as f64 / 1e9,
        cpu_seconds_per_gb: per_gb(busy_cpu_ns),
        tcp: summary::Tcp {
            connections: tcp.connections,
            closed: tcp.closed,
            aborted: tcp.aborted,
            bytes: tcp.bytes,
            verify: args.verify,
            verified: tcp.verified,
            mismatches: tcp.mismatches,
            iperf3_bytes: tcp.iperf3_bytes,
            segments,
            segments_per_conn,
        },
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
    devs: &mut [Dev],
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
