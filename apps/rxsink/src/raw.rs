//! `--mode drop|read`: drains the port's RX queues, on this thread (the
//! stepped simulator between polls, outside the timed section), with an
//! application thread (`--cores A,B`: batches handed over, buffers returned
//! from the other core in `--recycle-batch` groups), or one pinned thread
//! per queue (`--queues N`, RSS).

use crate::capture::Capture;
use crate::cli::{Args, Mode};
use crate::error::RunError;
use crate::summary::{self, ratio, Locks};
use crate::{wblog, wire_json};
use pipeline::os as signals;
use pipeline::port::{Port, PortReport, Queue};
use pipeline::stage;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Batches queued between the RX thread and the application thread.
pub const BATCH_QUEUE: usize = 8;

/// What a receive loop measured.
#[derive(Default)]
pub struct Recv {
    /// Polls that had to wait for the application thread to free a batch.
    pub handoff_waits: u64,
    /// Wall time spent in poll + processing + recycle for polls that
    /// returned packets (the RX thread busy-polls, so this is its CPU time
    /// for that work; the simulator's work is never inside it).
    pub busy_ns: u64,
    pub polls_nonempty: u64,
    /// Packets harvested.
    pub packets: u64,
    /// The loop ended because the wire (a replayed file) was over and
    /// everything it brought had been received.
    pub wire_drained: bool,
    /// A fold of every byte read in `read` mode (so the reads cannot be
    /// optimised away, and runs can be compared).
    pub fold: u64,
}

/// When the loops stop: `--packets` (over all queues), `--duration`, a
/// signal, or another queue stopping.
struct Stop {
    packets: Option<u64>,
    deadline: Option<Instant>,
    total: AtomicU64,
    flag: AtomicBool,
}

impl Stop {
    fn new(args: &Args) -> Stop {
        Stop {
            packets: args.packets,
            deadline: args
                .duration
                .map(|d| Instant::now() + Duration::from_secs_f64(d)),
            total: AtomicU64::new(0),
            flag: AtomicBool::new(false),
        }
    }

    /// Frames the next poll may take: never past `--packets`.
    fn budget(&self, batch: usize) -> usize {
        self.packets.map_or(batch, |max| {
            batch.min(max.saturating_sub(self.total.load(Ordering::Relaxed)) as usize)
        })
    }

    fn add(&self, n: usize) {
        if n > 0 {
            let t = self.total.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            if self.packets.is_some_and(|max| t >= max) {
                self.flag.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The cheap check, every round.
    fn reached(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The full check, every few hundred rounds.
    fn due(&self, now: Instant) -> bool {
        if signals::stop_requested() || self.deadline.is_some_and(|d| now >= d) {
            self.flag.store(true, Ordering::Relaxed);
        }
        self.reached()
    }
}

pub fn run(args: &Args) -> Result<serde_json::Value, RunError> {
    let mut port = Port::open(&args.device_spec(), &args.port_config())?;
    let mut queues = port.take_queues();
    if let Some(path) = &args.wb_log {
        let q = &mut queues[0];
        q.rx.set_wb_observer(Some(wblog::observer(path, q.id())?));
    }
    port.start()?;
    if args.queues > 1 {
        return run_multi(args, port, queues);
    }
    let cores = args.cores.map(|c| (c.rx, c.app));
    if let Some(core) = args.core.or(cores.map(|c| c.0)) {
        pipeline::pin_current_thread(core).map_err(RunError::Usage)?;
    }
    let mut capture = args.pcap_out.as_deref().map(Capture::create).transpose()?;
    let stop = Stop::new(args);
    let start = Instant::now();
    let cpu0 = signals::thread_cpu_ns();
    let q = &mut queues[0];
    let (r, app) = match cores {
        None => {
            let mut batch = q.new_batch(args.batch);
            let r = rx_loop(args, &mut port, q, &stop, |q, budget, r| {
                harvest(q, &mut batch, budget, args.mode, capture.as_mut(), r)
            });
            (r, None)
        }
        Some((_, app_core)) => {
            let (mut rx, app) = stage::handoff(q, args.batch, BATCH_QUEUE, args.recycle_batch)?;
            let mode = args.mode;
            let app = std::thread::Builder::new()
                .name("rxsink-app".into())
                .spawn(move || app_thread(app_core, mode, app))
                .map_err(|e| {
                    RunError::Other(format!("cannot start the application thread: {e}"))
                })?;
            let mut r = rx_loop(args, &mut port, q, &stop, |q, budget, r| {
                let t0 = Instant::now();
                let n = q.poll(rx.batch(), budget);
                if n > 0 {
                    if let Some(c) = capture.as_mut() {
                        c.batch(rx.batch());
                    }
                    r.busy_ns += t0.elapsed().as_nanos() as u64;
                    r.polls_nonempty += 1;
                    // The application is behind: wait for an empty batch
                    // (bounded by the stop checks).
                    if !rx.send(signals::stop_requested) {
                        stop.flag.store(true, Ordering::Relaxed);
                    }
                }
                n
            });
            r.handoff_waits = rx.waits;
            rx.finish();
            let a = app
                .join()
                .map_err(|_| RunError::Other("application thread panicked".into()))?;
            (r, Some(a))
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ns = signals::thread_cpu_ns() - cpu0;
    let pcap_out = capture.map(Capture::finish);
    drop(queues[0].rx.set_wb_observer(None)); // flushes --wb-log
    let (name, sim_mode, wire_stats) = describe(&port);
    let report = port.shutdown(queues);
    let (xdp_mode, xdp_counters) = summary::xdp(&report);
    report_errors(&report);
    let q = &report.queues[0];
    let st = q.rx;
    let summary = summary::Raw {
        device: name,
        xdp_mode,
        xdp: xdp_counters,
        wire: sim_mode.as_ref().map(|_| args.wire.to_string()),
        mode: args.mode.to_string(),
        header_split: args.header_split.to_string(),
        sim_mode,
        cores: cores.map(|(a, b)| [a, b]),
        gro: args.gro,
        batch: args.batch,
        ring_size: args.ring_size,
        frame_size: args.frame_size.to_string(),
        packets: st.packets,
        bytes: st.bytes,
        seconds,
        pps: st.packets as f64 / seconds,
        gbps: st.bytes as f64 * 8.0 / seconds / 1e9,
        ns_per_packet: ratio(r.busy_ns, st.packets),
        rx_thread_cpu_seconds: cpu_ns as f64 / 1e9,
        app_thread_cpu_seconds: app.map(|a| a.cpu_ns as f64 / 1e9),
        polls_nonempty: r.polls_nonempty,
        packets_per_poll: ratio(st.packets, r.polls_nonempty),
        handoff_waits: r.handoff_waits,
        wire_drained: r.wire_drained,
        drops: summary::drops(&st, report.hw.missed_packets),
        hbo: st.hbo,
        dummy_headers: st.dummy_headers,
        refill_short: st.refill_short,
        pool: q.pages,
        header_pool: q.headers,
        hdr_pool: Locks::new(
            q.header_locks,
            st.packets,
            summary::Strategy {
                strategy: args.hdr_pool.name(),
            },
        ),
        payload_return: Locks::new(
            q.page_locks,
            st.packets,
            summary::RecycleBatch {
                recycle_batch: args.recycle_batch,
            },
        ),
        dma_faults: report.dma_faults(),
        hw: (&report).into(),
        leaked_pages: report.leaked_pages(),
        leaked_headers: report.leaked_headers(),
        read_fold: r.fold.wrapping_add(app.map_or(0, |a| a.fold)),
        wire_stats,
        pcap_out: pcap_out.map(Into::into),
    };
    serde_json::to_value(summary).map_err(|e| RunError::Other(e.to_string()))
}

/// `--queues N`: one pinned thread per queue (queue i on core --core + i),
/// then, with the device stopped, a last harvest of what it wrote after the
/// threads left, so the counts match the device's.
fn run_multi(
    args: &Args,
    mut port: Port,
    mut queues: Vec<Queue>,
) -> Result<serde_json::Value, RunError> {
    let stop = Stop::new(args);
    let start = Instant::now();
    let nic = port.sim().cloned();
    let results = stage::per_queue(&mut queues, args.core.unwrap_or(0), |_, q, core| {
        let mut batch = q.new_batch(args.batch);
        let mut r = Recv::default();
        let mut iter = 0u64;
        loop {
            let drained = nic
                .as_ref()
                .is_some_and(|n| n.wire_drained())
                .then(|| progress(q));
            let n = harvest(q, &mut batch, args.batch, args.mode, None, &mut r);
            stop.add(n);
            if n == 0 && drained.is_some_and(|p| p == progress(q)) {
                r.wire_drained = true;
                break;
            }
            iter += 1;
            if iter.is_multiple_of(256) && stop.due(Instant::now()) {
                break;
            }
        }
        (r, core)
    });
    let seconds = start.elapsed().as_secs_f64();
    port.stop();
    let mut per = Vec::new();
    let mut fold = 0u64;
    let mut drained_all = !results.is_empty();
    for (q, res) in queues.iter_mut().zip(results) {
        let (r, core) = res.unwrap_or_else(|e| {
            tracing::warn!("{e}");
            (Recv::default(), None)
        });
        drained_all &= r.wire_drained;
        // Not timed: only the reads' fold is kept.
        let mut batch = q.new_batch(args.batch);
        let mut drained = Recv::default();
        while harvest(q, &mut batch, args.batch, args.mode, None, &mut drained) > 0 {}
        fold = fold.wrapping_add(r.fold).wrapping_add(drained.fold);
        // Frames taken after the timed loop are not in its cost figures.
        let timed = r.packets;
        per.push((r, core, timed));
    }
    let (name, _, wire_stats) = describe(&port);
    let report = port.shutdown(queues);
    let (xdp_mode, xdp_counters) = summary::xdp(&report);
    report_errors(&report);
    let (mut packets, mut bytes, mut drops_total) = (0u64, 0u64, 0u64);
    let per_queue: Vec<_> = report
        .queues
        .iter()
        .zip(per)
        .map(|(q, (r, core, timed))| {
            let st = q.rx;
            packets += st.packets;
            bytes += st.bytes;
            drops_total += st.drops_total();
            summary::RawQueue {
                queue: q.queue,
                core,
                packets: st.packets,
                bytes: st.bytes,
                pps: st.packets as f64 / seconds,
                ns_per_packet: ratio(r.busy_ns, timed),
                packets_per_poll: ratio(timed, r.polls_nonempty),
                drops: st.drops_total(),
                leaked_pages: q.leaked_pages,
                leaked_headers: q.leaked_headers,
            }
        })
        .collect();
    let summary = summary::RawMulti {
        device: name,
        xdp_mode,
        xdp: xdp_counters,
        wire: report.sim.map(|_| args.wire.to_string()),
        mode: args.mode.to_string(),
        header_split: args.header_split.to_string(),
        queues: args.queues,
        rss_key: "Microsoft verification key",
        batch: args.batch,
        ring_size: args.ring_size,
        frame_size: args.frame_size.to_string(),
        flows: args.flows,
        packets,
        bytes,
        seconds,
        pps: packets as f64 / seconds,
        gbps: bytes as f64 * 8.0 / seconds / 1e9,
        per_queue,
        wire_drained: drained_all,
        drops: summary::DropsTotal {
            total: drops_total,
            missed: report.hw.missed_packets,
        },
        dma_faults: report.dma_faults(),
        hw: (&report).into(),
        wire_stats,
        leaked_pages: report.leaked_pages(),
        leaked_headers: report.leaked_headers(),
        read_fold: fold,
    };
    serde_json::to_value(summary).map_err(|e| RunError::Other(e.to_string()))
}

/// The RX thread's loop: step the simulator (stepped mode), receive,
/// until a stop condition; one stats line a second.
fn rx_loop(
    args: &Args,
    port: &mut Port,
    q: &mut Queue,
    stop: &Stop,
    mut receive: impl FnMut(&mut Queue, usize, &mut Recv) -> usize,
) -> Recv {
    let mut r = Recv::default();
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(1);
    let mut last = (start, 0u64, 0u64);
    let mut iter: u64 = 0;
    loop {
        let budget = stop.budget(args.batch);
        // Device work happens outside the timed section.
        port.step(budget);
        let drained = port.wire_drained().then(|| progress(q));
        let n = receive(q, budget, &mut r);
        stop.add(n);
        if n == 0 && drained.is_some_and(|p| p == progress(q)) {
            r.wire_drained = true;
            break;
        }
        iter += 1;
        if stop.reached() {
            break;
        }
        if !iter.is_multiple_of(256) {
            continue;
        }
        let now = Instant::now();
        if stop.due(now) {
            break;
        }
        if now >= next_report && !args.quiet {
            let st = *q.rx.stats();
            let secs = (now - last.0).as_secs_f64();
            let (dp, db) = (st.packets - last.1, st.bytes - last.2);
            eprintln!(
                "rxsink: {:6.1}s {:8.3} Mpps {:7.3} Gbit/s drops {}{}",
                (now - start).as_secs_f64(),
                dp as f64 / secs / 1e6,
                db as f64 * 8.0 / secs / 1e9,
                st.drops_total(),
                // The hardware's missed counter (MPC) clears on read and
                // is summed at the end; only the simulator reports live.
                port.sim().map_or(String::new(), |n| format!(
                    " missed {}",
                    n.stats().rx_missed
                )) + &q.rx.as_xdp().map_or(String::new(), |x| {
                    // The kernel's drops for the socket (one getsockopt).
                    let k = x.xdp_stats().kernel;
                    format!(" xdp_dropped {}", k.rx_dropped + k.rx_ring_full)
                })
            );
            last = (now, st.packets, st.bytes);
            next_report = now + Duration::from_secs(1);
        }
    }
    r
}

/// Frames the queue handed out or dropped so far (see
/// `RxStats::frames_handled`).
fn progress(q: &Queue) -> u64 {
    q.rx.stats().frames_handled()
}

/// One timed poll on the thread that owns the queue's pools: harvest up to
/// `budget` frames, (capture them,) read them in read mode, recycle them on
/// the owner fast path. Returns the frames received. Not inlined: it is the
/// timed unit, and `scripts/bench-rx.sh --callgrind` counts it by name.
#[inline(never)]
fn harvest(
    q: &mut Queue,
    batch: &mut driver::RxBatch,
    budget: usize,
    mode: Mode,
    capture: Option<&mut Capture>,
    r: &mut Recv,
) -> usize {
    let t0 = Instant::now();
    let n = q.poll(batch, budget);
    if n > 0 {
        if let Some(c) = capture {
            c.batch(batch);
        }
        if mode == Mode::Read {
            r.fold = r.fold.wrapping_add(read_batch(batch));
        }
        q.recycle(batch);
        r.busy_ns += t0.elapsed().as_nanos() as u64;
        r.polls_nonempty += 1;
        r.packets += n as u64;
    }
    n
}

/// What the application thread did.
#[derive(Clone, Copy)]
struct AppResult {
    fold: u64,
    cpu_ns: u64,
}

/// The application thread: reads the batches in read mode; the handoff
/// returns their buffers in `--recycle-batch` groups.
fn app_thread(core: usize, mode: Mode, app: stage::AppSide) -> AppResult {
    if let Err(e) = pipeline::pin_current_thread(core) {
        tracing::warn!("application thread: {e}");
    }
    let cpu0 = signals::thread_cpu_ns();
    let mut fold = 0u64;
    app.run(|b| {
        if mode == Mode::Read {
            fold = fold.wrapping_add(read_batch(b));
        }
    });
    AppResult {
        fold,
        cpu_ns: signals::thread_cpu_ns() - cpu0,
    }
}

/// Reads every byte of every frame in the batch.
fn read_batch(batch: &driver::RxBatch) -> u64 {
    let mut fold = 0u64;
    for p in batch.iter() {
        fold = fold.wrapping_add(read_all(p.header()));
        for s in p.segments() {
            fold = fold.wrapping_add(read_all(s));
        }
    }
    fold
}

/// Reads every byte of `b`, 8 at a time.
#[inline]
fn read_all(b: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        acc = acc.wrapping_add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
    }
    for &x in chunks.remainder() {
        acc = acc.wrapping_add(x as u64);
    }
    acc
}

/// The device's name, the simulator's mode and the wire's counters.
pub fn describe(port: &Port) -> (String, Option<String>, serde_json::Value) {
    (
        port.name(),
        port.sim_mode().map(|m| m.to_string()),
        wire_json::json(port.wire()),
    )
}

pub fn report_errors(report: &PortReport) {
    for e in &report.errors {
        tracing::warn!("{e}");
    }
}
