//! rxsink: the receive sink. Brings up an igb NIC (the simulator by default,
//! or a real / QEMU-emulated one through VFIO with `--device vfio:ADDR`),
//! drains one RX queue as fast as it can and reports where the time goes.
//!
//! Modes: `drop` never touches packet data (like XDP_DROP); `read` reads
//! every byte of every frame. One stats line per second on stderr, a final
//! summary on stdout (`--json` for one JSON object).

mod cli;
mod multiq;
mod signals;
mod tcp;
mod wblog;
mod wires;

use cli::{Args, DeviceSpec, Mode, SimMode, WireSpec};
use crossbeam_queue::ArrayQueue;
use driver::vfio::VfioNic;
use driver::{BufPool, Device, Igb, IgbConfig, RxBatch, RxConfig, RxRing};
use hw_sim::{SimConfig, SimNic};
use pipeline::{
    LockStats, PagePool, PagePoolConfig, Returner, StrategyHeaderPool, StrategyPoolConfig,
};
use serde_json::json;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args = match Args::parse_checked_from(std::env::args_os()) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = args.validate() {
        eprintln!("rxsink: {e}");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(mut summary) => {
            checksum_hint(&args, &mut summary);
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            } else {
                print_human(&summary);
            }
            if summary["leaked_pages"].as_u64() != Some(0)
                || summary["leaked_headers"].as_u64() != Some(0)
            {
                eprintln!("rxsink: buffers leaked (see leaked_pages / leaked_headers)");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rxsink: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Errors that end a run, each one line for the user.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error("device: {0}")]
    Device(#[from] driver::IgbError),
    #[error("{0}")]
    Vfio(#[from] driver::vfio::VfioError),
    #[error("buffer pool: {0}")]
    Pool(#[from] pipeline::PoolError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_) => 2,
            // Wrong, missing or unbound device: the user's to fix.
            RunError::Vfio(e) if e.is_usage() => 2,
            _ => 1,
        }
    }
}

/// The simulator, either stepped inside the RX loop or on its own thread;
/// or nothing to run beside the RX loop (a real NIC through VFIO).
pub(crate) enum Sim {
    Stepped(Box<hw_sim::SimEngine>),
    Thread(hw_sim::SimThread),
    Hardware,
}

pub(crate) type Ring = RxRing<PagePool, StrategyHeaderPool>;

/// The simulated NIC and the engine that plays its hardware.
pub(crate) type SimParts = (Arc<SimNic>, hw_sim::SimEngine);

fn run(args: &Args) -> Result<serde_json::Value, RunError> {
    signals::install().map_err(RunError::Other)?;
    let cores = args.cores.map(|c| (c.rx, c.app));
    for c in [
        args.core,
        args.sim_core,
        cores.map(|c| c.0),
        cores.map(|c| c.1),
    ]
    .into_iter()
    .flatten()
    {
        // Fail early and clearly rather than inside a thread.
        pipeline::affinity::check_core(c).map_err(RunError::Usage)?;
    }
    // The simulator (its NIC and engine), or a VFIO NIC; the ring and pool
    // code below is the same for both.
    let (dev, sim_parts, wire_extras) = open_device(args)?;
    if args.mode == Mode::Tcp {
        return tcp::run(args, dev, sim_parts, wire_extras);
    }
    if args.queues > 1 {
        return multiq::run(args, dev, sim_parts, wire_extras);
    }
    let (nic, engine) = sim_parts.unzip();

    let mut igb = init_igb(&dev)?;
    let ring_size = args.ring_size;
    // Buffers in flight: the ring, plus the batches queued to the
    // application thread, plus what its returners hold.
    let in_flight = args.batch * (BATCH_QUEUE + 2)
        + if cores.is_some() {
            2 * args.recycle_batch
        } else {
            0
        };
    let pages = PagePool::new(
        igb.dma(),
        PagePoolConfig {
            buffers: args.pages.unwrap_or(ring_size * 2 + in_flight * 4),
            buf_len: args.payload_buf,
            headroom: args.headroom,
            ..PagePoolConfig::default()
        },
    )?;
    let hdrs = header_pool(args, &igb, ring_size * 2 + in_flight * 2)?;
    // A coalesced (GRO) packet carries up to 64 KiB: one descriptor per
    // payload buffer, plus one for the header's share.
    let max_descs = 65536 / args.payload_buf + 2;
    let rx_cfg = RxConfig {
        queue: 0,
        ring_size,
        split: args.header_split,
        max_descs_per_packet: max_descs,
    };
    let mut ring: Ring = RxRing::new(dev.clone(), igb.dma(), rx_cfg, pages, hdrs)?;
    if let Some(path) = &args.wb_log {
        ring.set_wb_observer(Some(wblog::observer(path, ring.queue())?));
    }
    igb.enable_rx();

    let mut sim = start_sim(engine, args)?;
    if let Some(core) = args.core.or(cores.map(|c| c.0)) {
        pipeline::pin_current_thread(core).map_err(RunError::Usage)?;
    }

    let mut capture = args.pcap_out.as_deref().map(Capture::create).transpose()?;
    let start = Instant::now();
    let cpu0 = signals::thread_cpu_ns();
    let (r, app) = match cores {
        None => {
            let batch = ring_batch(&ring, args.batch);
            (
                rx_loop(
                    args,
                    &mut ring,
                    &mut sim,
                    nic.as_ref(),
                    Handoff::Inline(batch),
                    capture.as_mut(),
                ),
                None,
            )
        }
        Some((_, app_core)) => {
            let full = Arc::new(ArrayQueue::<RxBatch>::new(BATCH_QUEUE));
            let empty = Arc::new(ArrayQueue::<RxBatch>::new(BATCH_QUEUE + 1));
            for _ in 0..BATCH_QUEUE {
                let _ = empty.push(ring_batch(&ring, args.batch));
            }
            let (pages, hdrs) = ring.pools();
            let page_ret = Returner::new(pages.returner(), args.recycle_batch)?;
            let hdr_ret = Returner::new(hdrs.returner(), args.recycle_batch)?;
            let done = Arc::new(AtomicBool::new(false));
            let app = {
                let (full, empty, done, mode) =
                    (full.clone(), empty.clone(), done.clone(), args.mode);
                std::thread::Builder::new()
                    .name("rxsink-app".into())
                    .spawn(move || app_thread(app_core, mode, full, empty, done, page_ret, hdr_ret))
                    .map_err(|e| {
                        RunError::Other(format!("cannot start the application thread: {e}"))
                    })?
            };
            let handoff = Handoff::Thread {
                full: full.clone(),
                empty: empty.clone(),
                cur: ring_batch(&ring, args.batch),
            };
            let r = rx_loop(
                args,
                &mut ring,
                &mut sim,
                nic.as_ref(),
                handoff,
                capture.as_mut(),
            );
            done.store(true, Ordering::Release);
            let a = app
                .join()
                .map_err(|_| RunError::Other("application thread panicked".into()))?;
            // Batches left in the queues: their buffers go home too.
            while let Some(mut b) = full.pop() {
                b.give_back();
            }
            (r, Some(a))
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ns = signals::thread_cpu_ns() - cpu0;
    let pcap_out = capture.map(Capture::finish);
    drop(ring.set_wb_observer(None)); // flushes --wb-log

    // Orderly stop: device thread first (no DMA after this), then the ring
    // takes back every posted buffer, then the pools prove nothing leaked.
    if let Sim::Thread(t) = sim {
        sim = Sim::Stepped(Box::new(t.stop()));
    }
    drop(sim);
    igb.disable();
    let stop_err = ring.stop().err();
    let hw = igb.read_stats();
    let st = *ring.stats();
    let sim_stats = nic.as_ref().map(|n| n.stats());
    let (pages, hdrs) = ring.pools();
    let page_audit = pages.audit();
    let hdr_audit = hdrs.audit();
    if let Some(e) = stop_err {
        tracing::warn!("{e}");
    }

    let mut drops = serde_json::Map::new();
    for reason in driver::DropReason::ALL {
        drops.insert(reason.name().into(), st.drop_count(reason).into());
    }
    drops.insert("missed".into(), hw.missed_packets.into());
    let lock_json = |l: LockStats| {
        json!({
            "lock_acquisitions": l.lock_acquisitions,
            "lock_acquisitions_per_packet": l.per_packet(st.packets),
            "contended": l.contended,
            "wait_ns_p50": l.wait_ns_p50,
            "wait_ns_p99": l.wait_ns_p99,
            "wait_ns_max": l.wait_ns_max,
            "hold_ns_p50": l.hold_ns_p50,
            "hold_ns_p99": l.hold_ns_p99,
        })
    };
    let mut hdr_pool = lock_json(hdrs.lock_stats());
    hdr_pool["strategy"] = args.hdr_pool.name().into();
    let mut payload_return = lock_json(pages.lock_stats());
    payload_return["recycle_batch"] = args.recycle_batch.into();
    Ok(json!({
        "device": dev.name(),
        "wire": nic.as_ref().map(|_| args.wire.to_string()),
        "mode": args.mode.to_string(),
        "header_split": args.header_split.to_string(),
        "sim_mode": nic.as_ref().map(|_| args.sim_mode().to_string()),
        "cores": cores.map(|(a, b)| vec![a, b]),
        "gro": args.gro,
        "batch": args.batch,
        "ring_size": ring_size,
        "frame_size": args.frame_size.to_string(),
        "packets": st.packets,
        "bytes": st.bytes,
        "seconds": seconds,
        "pps": st.packets as f64 / seconds,
        "gbps": st.bytes as f64 * 8.0 / seconds / 1e9,
        "ns_per_packet": if st.packets > 0 { r.busy_ns as f64 / st.packets as f64 } else { 0.0 },
        "rx_thread_cpu_seconds": cpu_ns as f64 / 1e9,
        "app_thread_cpu_seconds": app.map(|a| a.cpu_ns as f64 / 1e9),
        "polls_nonempty": r.polls_nonempty,
        "packets_per_poll": if r.polls_nonempty > 0 { st.packets as f64 / r.polls_nonempty as f64 } else { 0.0 },
        "handoff_waits": r.handoff_waits,
        "wire_drained": r.wire_drained,
        "drops": drops,
        "hbo": st.hbo,
        "dummy_headers": st.dummy_headers,
        "refill_short": st.refill_short,
        "pool": pages.stats(),
        "header_pool": hdrs.stats(),
        "hdr_pool": hdr_pool,
        "payload_return": payload_return,
        "dma_faults": sim_stats.map(|s| s.dma_faults),
        "hw": {
            "gprc": hw.good_packets_rx,
            "gorc": hw.good_octets_rx,
            "mpc": hw.missed_packets,
        },
        "leaked_pages": page_audit.lent,
        "leaked_headers": hdr_audit.lent,
        "read_fold": r.fold.wrapping_add(app.map_or(0, |a| a.fold)),
        "wire_stats": wire_extras.json(),
        "pcap_out": pcap_out.map(|(frames, errors)| json!({"frames": frames, "errors": errors})),
    }))
}

/// The NIC `open_device` opened: the device, the simulator's parts when it
/// is simulated, and its wire's extras.
type Opened = (Arc<dyn Device>, Option<SimParts>, wires::WireExtras);

/// Opens the NIC `--device` names: the simulator on its `--wire`, or a
/// VFIO device.
fn open_device(args: &Args) -> Result<Opened, RunError> {
    match &args.device {
        DeviceSpec::Sim => {
            let (wire, extras) = wires::open(args)?;
            let sim_cfg = SimConfig {
                flow_control: !args.lossy,
                gro: args.gro,
                ..SimConfig::default()
            };
            sim_cfg
                .validate()
                .map_err(|e| RunError::Usage(format!("simulator: {e}")))?;
            let (nic, engine) = SimNic::new(sim_cfg, wire);
            Ok((nic.clone(), Some((nic, engine)), extras))
        }
        DeviceSpec::Vfio(addr) => Ok((VfioNic::open(addr)?, None, Default::default())),
    }
}

/// Resets and brings up the NIC, accepting frames up to 9216 bytes.
pub(crate) fn init_igb(dev: &Arc<dyn Device>) -> Result<Igb, RunError> {
    Ok(Igb::init(
        dev.clone(),
        IgbConfig {
            max_frame: 9216,
            ..IgbConfig::default()
        },
    )?)
}

/// The header pool `--hdr-pool` and `--hdr-buf` ask for, of `buffers` slots.
pub(crate) fn header_pool(
    args: &Args,
    igb: &Igb,
    buffers: usize,
) -> Result<StrategyHeaderPool, RunError> {
    Ok(StrategyHeaderPool::new(
        igb.dma(),
        StrategyPoolConfig {
            strategy: args.hdr_pool,
            buffers,
            slot: args.hdr_buf,
            ..StrategyPoolConfig::default()
        },
    )?)
}

/// Starts the simulator's engine the way `--sim-mode` asks.
pub(crate) fn start_sim(engine: Option<hw_sim::SimEngine>, args: &Args) -> Result<Sim, RunError> {
    Ok(match (engine, args.sim_mode()) {
        (None, _) => Sim::Hardware,
        (Some(engine), SimMode::Stepped) => Sim::Stepped(Box::new(engine)),
        (Some(engine), SimMode::Thread) => {
            let core = args.sim_core;
            let t = engine.spawn_with(move || {
                if let Some(c) = core {
                    if let Err(e) = pipeline::pin_current_thread(c) {
                        tracing::warn!("simulator thread: {e}");
                    }
                }
            });
            Sim::Thread(
                t.map_err(|e| RunError::Other(format!("cannot start the simulator thread: {e}")))?,
            )
        }
    })
}

/// Packets the ring handed out or dropped so far: unchanged over a poll
/// means the ring had nothing completed.
pub(crate) fn ring_progress(ring: &Ring) -> u64 {
    let st = ring.stats();
    st.packets + st.drops_total()
}

/// A pcap replay without `--fix-checksums` whose frames the NIC dropped
/// for a wrong checksum: say how many, and name the option (stderr line
/// and `pcap_checksum_drops` in the summary).
fn checksum_hint(args: &Args, summary: &mut serde_json::Value) {
    if !matches!(args.wire, WireSpec::Pcap(_)) {
        return;
    }
    let drops = &summary["drops"];
    // (--queues N in drop/read mode reports drops by total only.)
    let (Some(l4), Some(ip)) = (drops["l4_checksum"].as_u64(), drops["ip_checksum"].as_u64())
    else {
        return;
    };
    let n = l4 + ip;
    summary["pcap_checksum_drops"] = n.into();
    if n > 0 && !args.fix_checksums {
        let hint = format!(
            "{n} replayed frames were dropped for a wrong IPv4/TCP/UDP checksum \
             (a capture taken on the sending host holds checksums left to the NIC); \
             --fix-checksums recomputes them"
        );
        eprintln!("rxsink: {hint}");
        summary["pcap_checksum_hint"] = hint.into();
    }
}

/// Batches queued between the RX thread and the application thread.
const BATCH_QUEUE: usize = 8;

fn ring_batch(ring: &Ring, batch: usize) -> RxBatch {
    ring.new_batch(batch)
}

/// Where the RX loop puts a filled batch.
enum Handoff {
    /// Processed and recycled on the RX thread (owner fast path).
    Inline(RxBatch),
    /// Sent to the application thread, which returns the buffers through
    /// the pools' foreign path.
    Thread {
        full: Arc<ArrayQueue<RxBatch>>,
        empty: Arc<ArrayQueue<RxBatch>>,
        cur: RxBatch,
    },
}

/// The RX thread: step the simulator (stepped mode), poll, hand off; until
/// --packets, --duration or a signal.
fn rx_loop(
    args: &Args,
    ring: &mut Ring,
    sim: &mut Sim,
    nic: Option<&Arc<SimNic>>,
    mut handoff: Handoff,
    mut capture: Option<&mut Capture>,
) -> Recv {
    let mut r = Recv::default();
    let start = Instant::now();
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let mut next_report = start + Duration::from_secs(1);
    let mut last = (start, 0u64, 0u64);
    let mut iter: u64 = 0;
    loop {
        // Never harvest past --packets.
        let budget = args.packets.map_or(args.batch, |max| {
            args.batch.min((max - ring.stats().packets) as usize)
        });
        if let Sim::Stepped(engine) = sim {
            // Device work happens outside the timed section.
            engine.step(budget);
        }
        // A replayed file is over once the device has placed all of it and
        // a poll after that finds the ring empty (no packet, no drop).
        let drained = nic
            .is_some_and(|n| n.wire_drained())
            .then(|| ring_progress(ring));
        let got = match &mut handoff {
            Handoff::Inline(batch) => harvest(
                ring,
                batch,
                budget,
                args.mode,
                capture.as_deref_mut(),
                &mut r,
            ),
            Handoff::Thread { full, empty, cur } => {
                let t0 = Instant::now();
                let n = ring.poll(cur, budget);
                if n > 0 {
                    if let Some(c) = capture.as_deref_mut() {
                        c.batch(cur);
                    }
                    r.busy_ns += t0.elapsed().as_nanos() as u64;
                    r.polls_nonempty += 1;
                    // The application is behind: wait for an empty batch
                    // (bounded by the stop checks below).
                    let mut next = empty.pop();
                    while next.is_none() && !signals::stop_requested() {
                        r.handoff_waits += 1;
                        std::hint::spin_loop();
                        next = empty.pop();
                    }
                    let Some(next) = next else { break };
                    let filled = std::mem::replace(cur, next);
                    if let Err(mut b) = full.push(filled) {
                        b.give_back();
                    }
                }
                n
            }
        };
        if got == 0 && drained.is_some_and(|p| p == ring_progress(ring)) {
            r.wire_drained = true;
            break;
        }
        iter += 1;
        let st = ring.stats();
        if args.packets.is_some_and(|max| st.packets >= max) {
            break;
        }
        if iter.is_multiple_of(256) {
            if signals::stop_requested() {
                break;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            if now >= next_report && !args.quiet {
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
                    nic.map_or(String::new(), |n| format!(
                        " missed {}",
                        n.stats().rx_missed
                    ))
                );
                last = (now, st.packets, st.bytes);
                next_report = now + Duration::from_secs(1);
            }
        }
    }
    if let Handoff::Thread { cur, .. } = &mut handoff {
        cur.give_back();
    }
    r
}

/// `--pcap-out`: every received frame, reassembled from its buffers (a
/// copy, so capturing runs are not timing runs).
pub(crate) struct Capture {
    writer: hw_sim::wire::PcapWriter,
    buf: Vec<u8>,
    errors: u64,
}

impl Capture {
    pub(crate) fn create(path: &std::path::Path) -> Result<Capture, RunError> {
        let writer = hw_sim::wire::PcapWriter::create(path)
            .map_err(|e| RunError::Usage(format!("--pcap-out {}: {e}", path.display())))?;
        Ok(Capture {
            writer,
            buf: Vec::with_capacity(16384),
            errors: 0,
        })
    }

    pub(crate) fn frame(&mut self, frame: &[u8]) {
        if let Err(e) = self.writer.write(frame) {
            if self.errors == 0 {
                tracing::warn!("--pcap-out: {e}");
            }
            self.errors += 1;
        }
    }

    fn batch(&mut self, batch: &RxBatch) {
        for p in batch.iter() {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            buf.extend_from_slice(p.header());
            for s in p.segments() {
                buf.extend_from_slice(s);
            }
            self.frame(&buf);
            self.buf = buf;
        }
    }

    /// Flushes the file; returns (frames written, write errors).
    pub(crate) fn finish(mut self) -> (u64, u64) {
        if let Err(e) = self.writer.flush() {
            tracing::warn!("--pcap-out: {e}");
            self.errors += 1;
        }
        (self.writer.frames(), self.errors)
    }
}

/// What the application thread did.
#[derive(Clone, Copy)]
struct AppResult {
    fold: u64,
    cpu_ns: u64,
}

/// The application thread: consumes batches, returns header slots and
/// payload pages through the pools' foreign path in `--recycle-batch`
/// groups, hands the empty batch back.
fn app_thread(
    core: usize,
    mode: Mode,
    full: Arc<ArrayQueue<RxBatch>>,
    empty: Arc<ArrayQueue<RxBatch>>,
    done: Arc<AtomicBool>,
    mut page_ret: Returner,
    mut hdr_ret: Returner,
) -> AppResult {
    if let Err(e) = pipeline::pin_current_thread(core) {
        tracing::warn!("application thread: {e}");
    }
    let cpu0 = signals::thread_cpu_ns();
    let mut fold = 0u64;
    loop {
        let Some(mut b) = full.pop() else {
            if done.load(Ordering::Acquire) && full.is_empty() {
                break;
            }
            std::hint::spin_loop();
            continue;
        };
        if mode == Mode::Read {
            fold = fold.wrapping_add(read_batch(&b));
        }
        b.drain_bufs(|h| hdr_ret.push(h), |p| page_ret.push(p));
        if let Err(mut b) = empty.push(b) {
            b.give_back();
        }
    }
    page_ret.flush();
    hdr_ret.flush();
    AppResult {
        fold,
        cpu_ns: signals::thread_cpu_ns() - cpu0,
    }
}

/// Reads every byte of every frame in the batch.
fn read_batch(batch: &RxBatch) -> u64 {
    let mut fold = 0u64;
    for p in batch.iter() {
        fold = fold.wrapping_add(read_all(p.header()));
        for s in p.segments() {
            fold = fold.wrapping_add(read_all(s));
        }
    }
    fold
}

/// One timed poll on the thread that owns the ring's pools: harvest up to
/// `budget` frames, (capture them,) read them in read mode, recycle them on
/// the owner fast path. Returns the frames received.
pub(crate) fn harvest(
    ring: &mut Ring,
    batch: &mut RxBatch,
    budget: usize,
    mode: Mode,
    capture: Option<&mut Capture>,
    r: &mut Recv,
) -> usize {
    let t0 = Instant::now();
    let n = ring.poll(batch, budget);
    if n > 0 {
        if let Some(c) = capture {
            c.batch(batch);
        }
        if mode == Mode::Read {
            r.fold = r.fold.wrapping_add(read_batch(batch));
        }
        ring.recycle(batch);
        r.busy_ns += t0.elapsed().as_nanos() as u64;
        r.polls_nonempty += 1;
    }
    n
}

#[derive(Default)]
pub(crate) struct Recv {
    /// Polls that had to wait for the application thread to free a batch.
    pub(crate) handoff_waits: u64,
    /// Wall time spent in poll + processing + recycle for polls that
    /// returned packets (the RX thread busy-polls, so this is its CPU time
    /// for that work; the simulator's work is never inside it).
    pub(crate) busy_ns: u64,
    pub(crate) polls_nonempty: u64,
    /// A fold of every byte read in `read` mode (so the reads cannot be
    /// optimised away, and runs can be compared).
    pub(crate) fold: u64,
    /// The loop ended because the wire (a replayed file) was exhausted and
    /// everything it brought had been received.
    pub(crate) wire_drained: bool,
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

fn print_human(s: &serde_json::Value) {
    println!(
        "rxsink: {} packets, {} bytes in {:.3} s: {:.3} Mpps, {:.3} Gbit/s, {:.1} ns/packet (RX thread, batch {})",
        s["packets"],
        s["bytes"],
        s["seconds"].as_f64().unwrap_or(0.0),
        s["pps"].as_f64().unwrap_or(0.0) / 1e6,
        s["gbps"].as_f64().unwrap_or(0.0),
        s["ns_per_packet"].as_f64().unwrap_or(0.0),
        s["batch"],
    );
    println!("drops: {}", s["drops"]);
    println!("pool: {}", s["pool"]);
    println!("header pool: {}", s["header_pool"]);
    println!(
        "dma_faults {}  leaked_pages {}  leaked_headers {}",
        s["dma_faults"], s["leaked_pages"], s["leaked_headers"]
    );
}
