//! `--mode tcp`: the smoltcp stack on queue 0 (ARP, ping, TCP listeners on
//! `--port` and the iperf3 port), every stream read in place, optionally
//! verified against the pattern.
//!
//! The RX thread runs the stack (and the simulator between polls in
//! stepped mode) and busy-polls. Its cost figures:
//! - `busy_seconds`: the wall time of the rounds that received frames
//!   (ring poll, presentation, smoltcp, the in-place reads, ACKs out).
//! - `busy_cpu_seconds` / `cpu_seconds_per_gb`: the receive path's CPU
//!   time: the thread's CPU time times the busy rounds' share of the loop's
//!   wall time (so time the thread spent preempted is not counted). Idle
//!   rounds and the simulator are not in it.
//! - `rx_thread_cpu_seconds` / `thread_cpu_seconds_per_gb`: everything the
//!   thread burned, idle spinning and a stepped simulator included.

use crate::cli::Args;
use crate::wires::WireExtras;
use crate::{signals, start_sim, Capture, RunError, Sim, SimParts};
use driver::rss::{RssConfig, DEFAULT_KEY};
use driver::{Device, Igb, IgbConfig};
use hw_sim::wire::PairEnd;
use hw_sim::{SimConfig, SimNic};
use pipeline::{HeaderPool, HeaderPoolConfig, StrategyHeaderPool};
use serde_json::json;
use stack::queue::{self, QueueSetup};
use stack::segstats::SegCounters;
use stack::smoltcp::time::Instant as SmolInstant;
use stack::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use stack::{DeviceConfig, PatternSender, SenderConfig, SinkConfig, SocketMemory, TcpSink};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The far side's station address on the pair wire.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn smol_now(start: Instant) -> SmolInstant {
    smol_at(start, Instant::now())
}

/// `at` as smoltcp's clock, which starts at `start`.
fn smol_at(start: Instant, at: Instant) -> SmolInstant {
    SmolInstant::from_micros(at.saturating_duration_since(start).as_micros() as i64)
}

/// The queue pair's rings and pools as rxsink's options size them.
fn queue_setup(args: &Args) -> QueueSetup {
    QueueSetup {
        split: args.header_split,
        rx_ring: args.ring_size,
        payload_buf: args.payload_buf,
        headroom: args.headroom,
        rx_pages: args.pages.unwrap_or(args.ring_size * 4 + args.batch * 8),
        device: DeviceConfig {
            mtu: args.mtu,
            rx_batch: args.batch,
            ..DeviceConfig::default()
        },
        ..QueueSetup::default()
    }
}

/// An address on our subnet for the pair wire's far side: ours + 1 (or - 1
/// at the top of the subnet).
fn peer_ip(ours: Ipv4Cidr) -> Ipv4Address {
    let a = u32::from(ours.address());
    let host_mask = if ours.prefix_len() >= 32 {
        0
    } else {
        u32::MAX >> ours.prefix_len()
    };
    let next = a.wrapping_add(1);
    if next & host_mask == host_mask || next & host_mask == 0 {
        Ipv4Address::from(a.wrapping_sub(1))
    } else {
        Ipv4Address::from(next)
    }
}

/// One queue's device with the project's pools and rxsink's header pool.
type Dev = queue::PoolDevice<StrategyHeaderPool>;

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
    /// `SimNic::wire_drained`); all of them: the run is over.
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
    /// Device resets noticed and recovered from.
    device_resets: u64,
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
    nic: Option<&'a SimNic>,
}

/// What one queue's loop may drive besides its queue pair: the stepped
/// simulator and, with one queue, the device itself (to bring it up again
/// after a reset).
struct Owned<'a> {
    sim: Option<&'a mut Sim>,
    igb: Option<&'a mut Igb>,
    /// `--sim-reset-every`: the simulated NIC to reset now and then.
    reset: Option<(&'a SimNic, u64)>,
}

/// Brings the device and the queue pair up again after the device reset
/// itself.
fn recover(igb: &mut Igb, qdev: &mut Dev) -> Result<(), driver::IgbError> {
    igb.reinit()?;
    qdev.restart()?;
    igb.enable_rx();
    igb.enable_tx();
    Ok(())
}

/// The stack's loop on one queue: (step the simulator,) poll the stack,
/// flush TX; until a stop condition. Queue 0 prints the stats lines. Every
/// 64 rounds it also checks that the device still has the queue (one
/// register read): after a device reset it brings everything up again
/// (one queue) or stops with an error (several).
fn sink_loop(
    ctx: Ctx<'_>,
    q: usize,
    sink: &mut TcpSink<'_>,
    qdev: &mut Dev,
    mut own: Owned<'_>,
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
    let mut next_reset = own.reset.map(|(_, every)| every);
    let mut drained_here = false;
    loop {
        if let Some(Sim::Stepped(engine)) = own.sim.as_deref_mut() {
            engine.step(args.batch);
        }
        // Read before the poll: a replayed file is over for this queue once
        // the device has placed all of it and a round after that is idle.
        let drained = (!drained_here && nic.is_some_and(|n| n.wire_drained())).then(|| {
            let st = qdev.rx_ring().stats();
            st.packets + st.drops_total()
        });
        // One clock read per round: the stack's time and the busy timer's
        // start.
        let t0 = Instant::now();
        let busy = sink.poll(smol_at(start, t0), qdev);
        qdev.flush();
        if busy {
            r.busy_ns += t0.elapsed().as_nanos() as u64;
        } else if drained.is_some_and(|p| {
            let st = qdev.rx_ring().stats();
            p == st.packets + st.drops_total()
        }) {
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
        if let (Some((nic, every)), Some(at)) = (own.reset, next_reset) {
            if sink.stats().bytes >= at {
                // A fault for testing: the device resets itself (CTRL.RST
                // from outside the driver).
                driver::RegisterIo::write32(nic, driver::regs::CTRL, driver::regs::CTRL_RST);
                next_reset = Some(at + every);
            }
        }
        if qdev.device_lost() {
            match own.igb.as_deref_mut().map(|igb| recover(igb, qdev)) {
                Some(Ok(())) => {
                    r.device_resets += 1;
                    tracing::warn!("queue {q}: the device reset itself; brought up again");
                }
                Some(Err(e)) => {
                    r.error = Some(format!(
                        "the device reset itself and did not come back: {e}"
                    ));
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
                None => {
                    r.error = Some(format!(
                        "queue {q}: the device reset itself; recovery needs --queues 1"
                    ));
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
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
    own: Owned<'_>,
) -> Result<LoopResult, String> {
    let start = ctx.start;
    let services = if cfg.iperf3_port.is_some() { 2 } else { 1 };
    let mut mem = SocketMemory::for_sockets(services * cfg.max_conns, cfg.rx_buf, cfg.tx_buf)
        .map_err(|e| format!("socket memory: {e}"))?;
    let mut sink = TcpSink::with_iperf3(cfg, &mut mem, qdev, smol_now(start), server)?;
    let mut r = sink_loop(ctx, q, &mut sink, qdev, own);
    match r.error.take() {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

pub fn run(
    args: &Args,
    dev: Arc<dyn Device>,
    sim_parts: Option<SimParts>,
    extras: WireExtras,
) -> Result<serde_json::Value, RunError> {
    let (nic, engine) = sim_parts.unzip();
    let mut igb = crate::init_igb(&dev)?;
    let queues = args.queues as usize;
    let mut devs: Vec<Dev> = Vec::with_capacity(queues);
    for q in 0..queues {
        let setup = QueueSetup {
            queue: q as u32,
            ..queue_setup(args)
        };
        let hdrs = crate::header_pool(args, &igb, setup.rx_ring * 2 + args.batch * 8)?;
        devs.push(queue::build(dev.clone(), &igb, &setup, hdrs).map_err(RunError::Other)?);
    }
    for d in &mut devs {
        // Retransmitted / out-of-order / duplicate segment counters.
        d.track_segments();
    }
    if queues > 1 {
        igb.enable_rss_with(&RssConfig::new(queues as u32, &DEFAULT_KEY))?;
        for (d, role) in devs.iter_mut().zip(stack::arp_roles(queues)) {
            d.set_arp_role(role);
        }
    }
    igb.enable_rx();
    igb.enable_tx();
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
        mac: igb.mac(),
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
    let peer_done = Arc::new(AtomicBool::new(false));
    let mut extras = extras;
    let peer = match extras.far_end.take() {
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
                setup: QueueSetup {
                    device: DeviceConfig {
                        mtu: args.mtu,
                        ..DeviceConfig::default()
                    },
                    ..QueueSetup::default()
                },
            };
            let done = peer_done.clone();
            Some(
                std::thread::Builder::new()
                    .name("rxsink-peer".into())
                    .spawn(move || run_peer(end, cfg, done))
                    .map_err(|e| RunError::Other(format!("cannot start the pair peer: {e}")))?,
            )
        }
        None => None,
    };

    let mut sim = start_sim(engine, args)?;
    let shared = Shared {
        stop: AtomicBool::new(false),
        closed: AtomicU64::new(0),
        open: (0..queues).map(|_| AtomicU64::new(0)).collect(),
        rss_start: AtomicU64::new(0),
        drained: AtomicU64::new(0),
    };
    let server = stack::sink::iperf3_server();
    let ctx = Ctx {
        args,
        start,
        shared: &shared,
        peer_done: peer.as_ref().map(|_| &*peer_done),
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
            Owned {
                sim: Some(&mut sim),
                igb: Some(&mut igb),
                reset: nic.as_deref().zip(args.sim_reset_every),
            },
        );
        vec![r]
    } else {
        let ncores = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|s| {
            let handles: Vec<_> = devs
                .iter_mut()
                .enumerate()
                .map(|(q, qdev)| {
                    let (cfg, server) = (
                        SinkConfig {
                            id_base: (q as u32) << 24,
                            seed: sink_cfg.seed.wrapping_add(q as u64),
                            ..sink_cfg.clone()
                        },
                        server.clone(),
                    );
                    let core = (args.core.unwrap_or(0) + q) % ncores;
                    std::thread::Builder::new()
                        .name(format!("rxsink-q{q}"))
                        .spawn_scoped(s, move || {
                            if let Err(e) = pipeline::pin_current_thread(core) {
                                tracing::warn!("queue {q}: {e}");
                            }
                            let own = Owned {
                                sim: None,
                                igb: None,
                                reset: None,
                            };
                            let r = run_queue(ctx, q, cfg, server, qdev, own);
                            // One queue ending (or failing) stops the others.
                            ctx.shared.stop.store(true, Ordering::Relaxed);
                            r
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h
                        .join()
                        .unwrap_or_else(|_| Err("queue thread panicked".into())),
                    Err(e) => {
                        shared.stop.store(true, Ordering::Relaxed);
                        Err(format!("cannot start a queue thread: {e}"))
                    }
                })
                .collect()
        })
    };
    let seconds = start.elapsed().as_secs_f64();
    let rss_start = shared.rss_start.load(Ordering::Relaxed);
    let rss_end = signals::rss_kib();

    // Orderly stop: the peer (it stops on its own once done, or on the
    // signal), the device, then the rings give every buffer back.
    peer_done.store(true, Ordering::Release);
    let peer_result = match peer {
        Some(h) => Some(
            h.join()
                .map_err(|_| RunError::Other("pair peer thread panicked".into()))?,
        ),
        None => None,
    };
    if let Sim::Thread(t) = sim {
        sim = Sim::Stepped(Box::new(t.stop()));
    }
    drop(sim);
    igb.disable();
    let mut first_err = None;
    let mut tcp = stack::TcpStats::default();
    let (mut busy_ns, mut busy_cpu_ns, mut cpu_ns) = (0u64, 0u64, 0u64);
    let mut device_resets = 0u64;
    let mut leaks = queue::Leaks::default();
    let mut drops = serde_json::Map::new();
    let (mut packets, mut bytes, mut hbo) = (0u64, 0u64, 0u64);
    let mut per_queue = Vec::new();
    let mut present_all = stack::frame::PresentStats::default();
    let mut segments = SegCounters::default();
    let mut segments_per_conn = Vec::new();
    for (q, (mut qdev, r)) in devs.into_iter().zip(results).enumerate() {
        if let Some(s) = qdev.seg_stats() {
            segments.add(s.total());
            for (k, c) in s.per_conn() {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                v["queue"] = q.into();
                v["local_port"] = k.local_port.into();
                v["remote"] =
                    format!("{}:{}", Ipv4Address::from(k.remote_ip), k.remote_port).into();
                segments_per_conn.push(v);
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
        let ring_stats = *qdev.rx_ring().stats();
        let (l, stop_err) = queue::shutdown(qdev);
        if let Some(e) = stop_err {
            tracing::warn!("{e}");
        }
        leaks.pages += l.pages;
        leaks.headers += l.headers;
        leaks.tx_buffers += l.tx_buffers;
        for reason in driver::DropReason::ALL {
            let e = drops.entry(reason.name()).or_insert(0.into());
            *e = (e.as_u64().unwrap_or(0) + ring_stats.drop_count(reason)).into();
        }
        packets += ring_stats.packets;
        bytes += ring_stats.bytes;
        hbo += ring_stats.hbo;
        busy_ns += r.busy_ns;
        busy_cpu_ns += r.busy_cpu_ns();
        device_resets += r.device_resets;
        cpu_ns += r.cpu_ns;
        let t = r.stats;
        tcp += t;
        per_queue.push(json!({
            "queue": q,
            "packets": ring_stats.packets,
            "connections": t.connections,
            "bytes": t.bytes,
            "verified": t.verified,
            "mismatches": t.mismatches,
            "busy_seconds": r.busy_ns as f64 / 1e9,
            "busy_cpu_seconds": r.busy_cpu_ns() as f64 / 1e9,
            "rx_restarts": ring_stats.restarts,
            "rx_restart_reclaimed": ring_stats.restart_reclaimed,
            "present": serde_json::to_value(present).unwrap_or_default(),
            "tx": {
                "frames": tx_side.frames,
                "multi_buffer": tx_side.multi_buffer,
                "dropped": tx_side.dropped,
                "dropped_no_buffer": tx_side.dropped_no_buffer,
                "dropped_ring_full": tx_side.dropped_ring_full,
                "dropped_too_long": tx_side.dropped_too_long,
                "busy": tx_side.busy,
                "arp_replies_suppressed": tx_side.arp_replies_suppressed,
            },
            "arp": {"shared": arp.shared, "inbox_full": arp.inbox_full, "received": arp.received},
            "leaks": l,
        }));
    }
    if let Some(e) = first_err {
        return Err(RunError::Other(e));
    }
    // The device (and its capture callback) is gone: the writer is ours.
    let pcap_out = capture
        .and_then(Arc::into_inner)
        .and_then(|m| m.into_inner().ok())
        .map(Capture::finish);
    let hw = igb.read_stats();
    let sim_stats = nic.as_ref().map(|n| n.stats());
    drops.insert("missed".into(), hw.missed_packets.into());
    let gb = tcp.bytes as f64 / 1e9;
    let peer_json = peer_result.map(|p| match p {
        Ok(p) => json!({
            "ip": peer_ip(cidr).to_string(),
            "queued": p.sent.queued,
            "finished": p.sent.finished,
            "failed": p.sent.failed,
            "tx": {
                "frames": p.tx.frames,
                "dropped": p.tx.dropped,
                "dropped_no_buffer": p.tx.dropped_no_buffer,
                "dropped_ring_full": p.tx.dropped_ring_full,
                "dropped_too_long": p.tx.dropped_too_long,
                "busy": p.tx.busy,
                "sim_tx_dropped": p.sim_tx_dropped,
            },
            "segments": serde_json::to_value(p.segments).unwrap_or_default(),
            "leaks": p.leaks,
        }),
        Err(e) => json!({ "error": e }),
    });
    let iperf3 = server.lock().map(|s| s.stats()).ok();
    Ok(json!({
        "device": dev.name(),
        "wire": nic.as_ref().map(|_| args.wire.to_string()),
        "mode": "tcp",
        "ip": ip.to_string(),
        "port": args.port,
        "queues": queues,
        "header_split": args.header_split.to_string(),
        "sim_mode": nic.as_ref().map(|_| args.sim_mode().to_string()),
        "gro": args.gro,
        "mtu": args.mtu,
        "batch": args.batch,
        "ring_size": args.ring_size,
        "packets": packets,
        "bytes": bytes,
        "seconds": seconds,
        "gbps": tcp.bytes as f64 * 8.0 / seconds / 1e9,
        "rx_thread_cpu_seconds": cpu_ns as f64 / 1e9,
        "thread_cpu_seconds_per_gb": if gb > 0.0 { cpu_ns as f64 / 1e9 / gb } else { 0.0 },
        "busy_seconds": busy_ns as f64 / 1e9,
        "busy_cpu_seconds": busy_cpu_ns as f64 / 1e9,
        "cpu_seconds_per_gb": if gb > 0.0 { busy_cpu_ns as f64 / 1e9 / gb } else { 0.0 },
        "tcp": {
            "connections": tcp.connections,
            "closed": tcp.closed,
            "aborted": tcp.aborted,
            "bytes": tcp.bytes,
            "verify": args.verify,
            "verified": tcp.verified,
            "mismatches": tcp.mismatches,
            "iperf3_bytes": tcp.iperf3_bytes,
            "segments": serde_json::to_value(segments).unwrap_or_default(),
            "segments_per_conn": segments_per_conn,
        },
        "iperf3": iperf3.map(|s| json!({
            "tests_completed": s.tests_completed,
            "tests_failed": s.tests_failed,
            "refused_tests": s.refused_tests,
            "rejected_connections": s.rejected_connections,
            "last_test_bytes": s.last_test.as_ref().map(|t| t.bytes),
            "last_test_streams": s.last_test.as_ref().map(|t| t.streams.len()),
        })),
        "present": serde_json::to_value(present_all).unwrap_or_default(),
        "per_queue": per_queue,
        "device_resets": device_resets,
        "wire_drained": shared.drained.load(Ordering::Relaxed) == shared.open.len() as u64,
        "drops": drops,
        "hbo": hbo,
        "dma_faults": sim_stats.map(|s| s.dma_faults),
        "sim": sim_stats.map(|s| json!({
            "rx_frames": s.rx_frames,
            "rx_missed": s.rx_missed,
            "rx_oversize": s.rx_oversize,
            "rx_filtered": s.rx_filtered,
            "rx_link_down": s.rx_link_down,
            "tx_frames": s.tx_frames,
            "tx_dropped": s.tx_dropped,
        })),
        "hw": {
            "gprc": hw.good_packets_rx,
            "gorc": hw.good_octets_rx,
            "mpc": hw.missed_packets,
        },
        "peer": peer_json,
        "wire_stats": extras.json(),
        "pcap_out": pcap_out.map(|(frames, errors)| json!({"frames": frames, "errors": errors})),
        "memory": {"rss_kib_start": rss_start, "rss_kib_end": rss_end},
        "leaked_pages": leaks.pages,
        "leaked_headers": leaks.headers,
        "leaked_tx_buffers": leaks.tx_buffers,
    }))
}

struct PeerConfig {
    sender: SenderConfig,
    setup: QueueSetup,
}

struct PeerResult {
    sent: stack::SenderStats,
    /// The peer device's transmit counters (frames built, dropped by
    /// reason, refused while the ring was full).
    tx: stack::device::TxSideStats,
    /// Frames the peer's simulated NIC dropped on transmit.
    sim_tx_dropped: u64,
    /// The peer device's segment counters (its retransmissions, timeouts).
    segments: SegCounters,
    leaks: queue::Leaks,
}

/// The far side of the pair wire: a second simulated NIC, stepped here,
/// with the unmodified driver and a smoltcp pattern sender. Runs until the
/// sender is done or `stop` is set.
fn run_peer(end: PairEnd, cfg: PeerConfig, stop: Arc<AtomicBool>) -> Result<PeerResult, String> {
    let (sim, mut engine) = SimNic::new(
        SimConfig {
            mac: PEER_MAC,
            ..SimConfig::default()
        },
        Box::new(end),
    );
    let dev: Arc<dyn Device> = sim;
    let igb = Igb::init(dev.clone(), IgbConfig::default()).map_err(|e| e.to_string())?;
    let hdrs = HeaderPool::new(
        igb.dma(),
        HeaderPoolConfig {
            buffers: cfg.setup.rx_pages,
            ..HeaderPoolConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let mut qdev = queue::build(dev, &igb, &cfg.setup, hdrs)?;
    igb.enable_rx();
    igb.enable_tx();
    let mut mem = SocketMemory::for_sockets(cfg.sender.conns, cfg.sender.rx_buf, cfg.sender.tx_buf)
        .map_err(|e| format!("socket memory: {e}"))?;
    let start = Instant::now();
    qdev.track_segments();
    let mut sender = PatternSender::new(cfg.sender, &mut mem, &mut qdev, smol_now(start))?;
    while !sender.done() && !stop.load(Ordering::Acquire) && !signals::stop_requested() {
        engine.step(64);
        sender.poll(smol_now(start), &mut qdev);
        qdev.flush();
        engine.step(64);
    }
    let sent = *sender.stats();
    let tx = *qdev.tx_stats();
    let segments = qdev.seg_stats().map(|s| *s.total()).unwrap_or_default();
    let sim_tx_dropped = engine.nic().stats().tx_dropped;
    stop.store(true, Ordering::Release);
    // Keep answering (ACKs of the sink's FIN) until the RX thread is done.
    drop(sender);
    igb.disable();
    let (leaks, err) = queue::shutdown(qdev);
    if let Some(e) = err {
        tracing::warn!("pair peer: {e}");
    }
    Ok(PeerResult {
        sent,
        tx,
        sim_tx_dropped,
        segments,
        leaks,
    })
}
