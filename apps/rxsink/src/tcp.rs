//! `--mode tcp`: the smoltcp stack on queue 0 (ARP, ping, TCP listeners on
//! `--port` and the iperf3 port), every stream read in place, optionally
//! verified against the pattern.
//!
//! The RX thread runs the stack (and the simulator between polls in
//! stepped mode) and busy-polls. Its cost figures:
//! - `busy_seconds` / `cpu_seconds_per_gb`: the time of the rounds that
//!   received frames (ring poll, presentation, smoltcp, the in-place reads,
//!   ACKs out): the receive path's CPU time on its own core. Idle rounds
//!   and the simulator are not in it.
//! - `rx_thread_cpu_seconds` / `thread_cpu_seconds_per_gb`: everything the
//!   thread burned, idle spinning and a stepped simulator included.

use crate::cli::Args;
use crate::wires::WireExtras;
use crate::{signals, start_sim, Capture, RunError, Sim, SimParts};
use driver::{Device, Igb, IgbConfig};
use hw_sim::wire::PairEnd;
use hw_sim::{SimConfig, SimNic};
use pipeline::{HeaderPool, HeaderPoolConfig, StrategyHeaderPool, StrategyPoolConfig};
use serde_json::json;
use stack::queue::{self, QueueSetup};
use stack::smoltcp::time::Instant as SmolInstant;
use stack::smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use stack::{DeviceConfig, PatternSender, SenderConfig, SinkConfig, SocketMemory, TcpSink};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The far side's station address on the pair wire.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn smol_now(start: Instant) -> SmolInstant {
    SmolInstant::from_micros(start.elapsed().as_micros() as i64)
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

pub fn run(
    args: &Args,
    dev: Arc<dyn Device>,
    sim_parts: Option<SimParts>,
    extras: WireExtras,
) -> Result<serde_json::Value, RunError> {
    let (nic, engine) = sim_parts.unzip();
    let mut igb = Igb::init(
        dev.clone(),
        IgbConfig {
            max_frame: 9216,
            ..IgbConfig::default()
        },
    )?;
    let setup = queue_setup(args);
    let hdrs = StrategyHeaderPool::new(
        igb.dma(),
        StrategyPoolConfig {
            strategy: args.hdr_pool,
            buffers: setup.rx_ring * 2 + args.batch * 8,
            slot: args.hdr_buf,
            ..StrategyPoolConfig::default()
        },
    )?;
    let mut qdev = queue::build(dev.clone(), &igb, &setup, hdrs).map_err(RunError::Other)?;
    igb.enable_rx();
    igb.enable_tx();
    let capture = match args.pcap_out.as_deref() {
        Some(path) => {
            let shared = Arc::new(std::sync::Mutex::new(Capture::create(path)?));
            let c = shared.clone();
            qdev.set_capture(Box::new(move |frame: &[u8]| {
                if let Ok(mut c) = c.lock() {
                    c.frame(frame);
                }
            }));
            Some(shared)
        }
        None => None,
    };
    if let Some(path) = &args.wb_log {
        let q = qdev.rx_ring().queue();
        qdev.rx_ring_mut()
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
    let services = if sink_cfg.iperf3_port.is_some() { 2 } else { 1 };
    let mut mem = SocketMemory::for_sockets(
        services * sink_cfg.max_conns,
        sink_cfg.rx_buf,
        sink_cfg.tx_buf,
    )
    .map_err(|e| RunError::Other(format!("socket memory: {e}")))?;
    let mut sink =
        TcpSink::new(sink_cfg, &mut mem, &mut qdev, smol_now(start)).map_err(RunError::Usage)?;

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
    if let Some(core) = args.core {
        pipeline::pin_current_thread(core).map_err(RunError::Usage)?;
    }
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let cpu0 = signals::thread_cpu_ns();
    let mut busy_ns = 0u64;
    let mut next_report = start + Duration::from_secs(1);
    let mut last = (start, 0u64);
    let mut iter = 0u64;
    loop {
        if let Sim::Stepped(engine) = &mut sim {
            engine.step(args.batch);
        }
        let t0 = Instant::now();
        if sink.poll(smol_now(start), &mut qdev) {
            qdev.flush();
            busy_ns += t0.elapsed().as_nanos() as u64;
        } else {
            qdev.flush();
        }
        iter += 1;
        if !iter.is_multiple_of(64) {
            continue;
        }
        let st = *sink.stats();
        let idle = sink.open_connections() == 0;
        if signals::stop_requested()
            || args.until_closed.is_some_and(|n| st.closed >= n && idle)
            || (peer.is_some() && peer_done.load(Ordering::Acquire) && idle)
        {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_report && !args.quiet {
            let secs = (now - last.0).as_secs_f64();
            eprintln!(
                "rxsink: {:6.1}s {:7.3} Gbit/s tcp: {} open, {} closed, {} bytes, {} verified, {} mismatches",
                (now - start).as_secs_f64(),
                (st.bytes - last.1) as f64 * 8.0 / secs / 1e9,
                sink.open_connections(),
                st.closed,
                st.bytes,
                st.verified,
                st.mismatches,
            );
            last = (now, st.bytes);
            next_report = now + Duration::from_secs(1);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ns = signals::thread_cpu_ns() - cpu0;
    let tcp = *sink.stats();
    let present = *qdev.present_stats();
    let tx_side = *qdev.tx_stats();
    let ring_stats = *qdev.rx_ring().stats();
    drop(qdev.rx_ring_mut().set_wb_observer(None)); // flushes --wb-log
    drop(sink);

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
    let (leaks, stop_err) = queue::shutdown(qdev);
    // The device (and its capture callback) is gone: the writer is ours.
    let pcap_out = capture
        .and_then(Arc::into_inner)
        .and_then(|m| m.into_inner().ok())
        .map(Capture::finish);
    if let Some(e) = stop_err {
        tracing::warn!("{e}");
    }
    let hw = igb.read_stats();
    let sim_stats = nic.as_ref().map(|n| n.stats());
    let mut drops = serde_json::Map::new();
    for reason in driver::DropReason::ALL {
        drops.insert(reason.name().into(), ring_stats.drop_count(reason).into());
    }
    drops.insert("missed".into(), hw.missed_packets.into());
    let gb = tcp.bytes as f64 / 1e9;
    let peer_json = peer_result.map(|p| match p {
        Ok(p) => json!({
            "ip": peer_ip(cidr).to_string(),
            "queued": p.sent.queued,
            "finished": p.sent.finished,
            "failed": p.sent.failed,
            "leaks": p.leaks,
        }),
        Err(e) => json!({ "error": e }),
    });
    Ok(json!({
        "device": dev.name(),
        "wire": nic.as_ref().map(|_| args.wire.to_string()),
        "mode": "tcp",
        "ip": ip.to_string(),
        "port": args.port,
        "header_split": args.header_split.to_string(),
        "sim_mode": nic.as_ref().map(|_| args.sim_mode().to_string()),
        "gro": args.gro,
        "mtu": args.mtu,
        "batch": args.batch,
        "ring_size": args.ring_size,
        "packets": ring_stats.packets,
        "bytes": ring_stats.bytes,
        "seconds": seconds,
        "gbps": tcp.bytes as f64 * 8.0 / seconds / 1e9,
        "rx_thread_cpu_seconds": cpu_ns as f64 / 1e9,
        "thread_cpu_seconds_per_gb": if gb > 0.0 { cpu_ns as f64 / 1e9 / gb } else { 0.0 },
        "busy_seconds": busy_ns as f64 / 1e9,
        "cpu_seconds_per_gb": if gb > 0.0 { busy_ns as f64 / 1e9 / gb } else { 0.0 },
        "tcp": {
            "connections": tcp.connections,
            "closed": tcp.closed,
            "aborted": tcp.aborted,
            "bytes": tcp.bytes,
            "verify": args.verify,
            "verified": tcp.verified,
            "mismatches": tcp.mismatches,
        },
        "present": {
            "packets": present.packets,
            "frames": present.frames,
            "header_copies": present.header_copies,
            "segmented": present.segmented,
            "segments": present.segments,
            "linearized": present.linearized,
            "linearized_bytes": present.linearized_bytes,
            "sw_checked": present.sw_checked,
            "bad_checksum": present.bad_checksum,
            "malformed": present.malformed,
        },
        "tx": {
            "frames": tx_side.frames,
            "multi_buffer": tx_side.multi_buffer,
            "dropped": tx_side.dropped,
        },
        "drops": drops,
        "hbo": ring_stats.hbo,
        "dma_faults": sim_stats.map(|s| s.dma_faults),
        "hw": {
            "gprc": hw.good_packets_rx,
            "gorc": hw.good_octets_rx,
            "mpc": hw.missed_packets,
        },
        "peer": peer_json,
        "wire_stats": extras.json(),
        "pcap_out": pcap_out.map(|(frames, errors)| json!({"frames": frames, "errors": errors})),
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
    let mut sender = PatternSender::new(cfg.sender, &mut mem, &mut qdev, smol_now(start))?;
    while !sender.done() && !stop.load(Ordering::Acquire) && !signals::stop_requested() {
        engine.step(64);
        sender.poll(smol_now(start), &mut qdev);
        qdev.flush();
        engine.step(64);
    }
    let sent = *sender.stats();
    stop.store(true, Ordering::Release);
    // Keep answering (ACKs of the sink's FIN) until the RX thread is done.
    drop(sender);
    igb.disable();
    let (leaks, err) = queue::shutdown(qdev);
    if let Some(e) = err {
        tracing::warn!("pair peer: {e}");
    }
    Ok(PeerResult { sent, leaks })
}
