//! `--queues N` in drop and read modes: N RX queues, RSS spreading flows
//! over them (Toeplitz hash, redirection table round robin), one pinned
//! thread per queue with its own ring and pools, per-queue figures.

use crate::cli::Args;
use crate::wires::WireExtras;
use crate::{harvest, ring_progress, signals, start_sim, Recv, Ring, RunError, Sim, SimParts};
use driver::rss::{RssConfig, DEFAULT_KEY};
use driver::{Device, RxConfig, RxRing};
use pipeline::{PagePool, PagePoolConfig};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one queue's thread did.
#[derive(Default)]
struct QueueResult {
    recv: Recv,
    core: Option<usize>,
}

/// Stop conditions shared by the queue threads.
struct Shared {
    stop: AtomicBool,
    packets: AtomicU64,
}

pub fn run(
    args: &Args,
    dev: Arc<dyn Device>,
    sim_parts: Option<SimParts>,
    extras: WireExtras,
) -> Result<serde_json::Value, RunError> {
    let (nic, engine) = sim_parts.unzip();
    let mut igb = crate::init_igb(&dev)?;
    let queues = args.queues;
    let max_descs = 65536 / args.payload_buf + 2;
    let mut rings: Vec<Ring> = Vec::with_capacity(queues as usize);
    for q in 0..queues {
        let pages = PagePool::new(
            igb.dma(),
            PagePoolConfig {
                buffers: args.pages.unwrap_or(args.ring_size * 2 + args.batch * 8),
                buf_len: args.payload_buf,
                headroom: args.headroom,
                ..PagePoolConfig::default()
            },
        )?;
        let hdrs = crate::header_pool(args, &igb, args.ring_size * 2 + args.batch * 4)?;
        let cfg = RxConfig {
            queue: q,
            ring_size: args.ring_size,
            split: args.header_split,
            max_descs_per_packet: max_descs,
        };
        rings.push(RxRing::new(dev.clone(), igb.dma(), cfg, pages, hdrs)?);
    }
    let rss = RssConfig::new(queues, &DEFAULT_KEY);
    igb.enable_rss_with(&rss)?;
    igb.enable_rx();

    let mut sim = start_sim(engine, args)?;
    let shared = Shared {
        stop: AtomicBool::new(false),
        packets: AtomicU64::new(0),
    };
    let ncores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    let mut results: Vec<QueueResult> = std::thread::scope(|s| {
        let handles: Vec<_> = rings
            .iter_mut()
            .enumerate()
            .map(|(q, ring)| {
                let shared = &shared;
                let nic = nic.as_deref();
                // Queue i on core (--core + i) mod the core count.
                let core = (args.core.unwrap_or(0) + q) % ncores;
                std::thread::Builder::new()
                    .name(format!("rxsink-q{q}"))
                    .spawn_scoped(s, move || queue_loop(args, ring, shared, core, nic))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_default(),
                Err(e) => {
                    tracing::warn!("cannot start a queue thread: {e}");
                    shared.stop.store(true, Ordering::Relaxed);
                    QueueResult::default()
                }
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();

    if let Sim::Thread(t) = sim {
        sim = Sim::Stepped(Box::new(t.stop()));
    }
    drop(sim);
    igb.disable();
    let mut per_queue = Vec::new();
    let (mut packets, mut bytes, mut leaked_pages, mut leaked_headers) = (0u64, 0u64, 0, 0);
    let mut drops_total = 0u64;
    let mut fold = 0u64;
    for (ring, r) in rings.iter_mut().zip(results.iter_mut()) {
        // The device is stopped: harvest what it wrote after the queue's
        // thread left, so the counts match the device's.
        // Not timed: only the reads' fold is kept.
        let mut batch = ring.new_batch(args.batch);
        let mut drained = Recv::default();
        while harvest(ring, &mut batch, args.batch, args.mode, None, &mut drained) > 0 {}
        r.recv.fold = r.recv.fold.wrapping_add(drained.fold);
        if let Err(e) = ring.stop() {
            tracing::warn!("{e}");
        }
        let st = *ring.stats();
        let (pages, hdrs) = ring.pools();
        let (lp, lh) = (pages.audit().lent, hdrs.audit().lent);
        packets += st.packets;
        bytes += st.bytes;
        drops_total += st.drops_total();
        leaked_pages += lp;
        leaked_headers += lh;
        fold = fold.wrapping_add(r.recv.fold);
        per_queue.push(json!({
            "queue": ring.queue(),
            "core": r.core,
            "packets": st.packets,
            "bytes": st.bytes,
            "pps": st.packets as f64 / seconds,
            "ns_per_packet": if st.packets > 0 { r.recv.busy_ns as f64 / st.packets as f64 } else { 0.0 },
            "packets_per_poll": if r.recv.polls_nonempty > 0 { st.packets as f64 / r.recv.polls_nonempty as f64 } else { 0.0 },
            "drops": st.drops_total(),
            "leaked_pages": lp,
            "leaked_headers": lh,
        }));
    }
    let hw = igb.read_stats();
    let sim_stats = nic.as_ref().map(|n| n.stats());
    Ok(json!({
        "device": dev.name(),
        "wire": nic.as_ref().map(|_| args.wire.to_string()),
        "mode": args.mode.to_string(),
        "header_split": args.header_split.to_string(),
        "queues": queues,
        "rss_key": "Microsoft verification key",
        "batch": args.batch,
        "ring_size": args.ring_size,
        "frame_size": args.frame_size.to_string(),
        "flows": args.flows,
        "packets": packets,
        "bytes": bytes,
        "seconds": seconds,
        "pps": packets as f64 / seconds,
        "gbps": bytes as f64 * 8.0 / seconds / 1e9,
        "per_queue": per_queue,
        "drops": { "total": drops_total, "missed": hw.missed_packets },
        "dma_faults": sim_stats.map(|s| s.dma_faults),
        "hw": {
            "gprc": hw.good_packets_rx,
            "gorc": hw.good_octets_rx,
            "mpc": hw.missed_packets,
        },
        "wire_stats": extras.json(),
        "leaked_pages": leaked_pages,
        "leaked_headers": leaked_headers,
        "read_fold": fold,
    }))
}

/// One queue's thread: poll, (read,) recycle, until a stop condition.
fn queue_loop(
    args: &Args,
    ring: &mut Ring,
    shared: &Shared,
    core: usize,
    nic: Option<&hw_sim::SimNic>,
) -> QueueResult {
    let mut r = QueueResult::default();
    match pipeline::pin_current_thread(core) {
        Ok(()) => r.core = Some(core),
        Err(e) => tracing::warn!("queue {}: {e}", ring.queue()),
    }
    let mut batch = ring.new_batch(args.batch);
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mut iter = 0u64;
    loop {
        let drained = nic
            .is_some_and(|n| n.wire_drained())
            .then(|| ring_progress(ring));
        let n = harvest(ring, &mut batch, args.batch, args.mode, None, &mut r.recv);
        if n == 0 && drained.is_some_and(|p| p == ring_progress(ring)) {
            // A replayed file is over and this queue has all of it.
            r.recv.wire_drained = true;
            break;
        }
        if n > 0 {
            let total = shared.packets.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            if args.packets.is_some_and(|max| total >= max) {
                shared.stop.store(true, Ordering::Relaxed);
            }
        }
        iter += 1;
        if iter.is_multiple_of(256) {
            if shared.stop.load(Ordering::Relaxed) || signals::stop_requested() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
    }
    r
}
