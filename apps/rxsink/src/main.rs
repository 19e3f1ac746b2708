//! rxsink: the receive sink. Brings up an igb NIC (the simulator by default),
//! drains one RX queue as fast as it can and reports where the time goes.
//!
//! Modes: `drop` never touches packet data (like XDP_DROP); `read` reads
//! every byte of every frame. One stats line per second on stderr, a final
//! summary on stdout (`--json` for one JSON object).

mod cli;
mod signals;

use clap::Parser;
use cli::{Args, DeviceSpec, Mode, SimMode, WireSpec};
use driver::{Device, Igb, IgbConfig, RxConfig, RxRing};
use hw_sim::{SimConfig, SimNic};
use pipeline::{HeaderPool, HeaderPoolConfig, PagePool, PagePoolConfig};
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args = match Args::try_parse() {
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
        Ok(summary) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            } else {
                print_human(&summary);
            }
            if summary["leaked_pages"].as_u64() != Some(0) || summary["leaked_headers"].as_u64() != Some(0) {
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
enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error("device: {0}")]
    Device(#[from] driver::IgbError),
    #[error("buffer pool: {0}")]
    Pool(#[from] pipeline::PoolError),
    #[error("{0}")]
    Other(String),
}

impl RunError {
    fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// The simulator, either stepped inside the RX loop or on its own thread.
enum Sim {
    Stepped(Box<hw_sim::SimEngine>),
    Thread(hw_sim::SimThread),
}

fn run(args: &Args) -> Result<serde_json::Value, RunError> {
    signals::install().map_err(RunError::Other)?;
    match &args.device {
        DeviceSpec::Sim => {}
        DeviceSpec::Vfio(addr) => {
            return Err(RunError::Usage(format!(
                "--device vfio:{addr}: the VFIO backend is not built yet; use --device sim"
            )))
        }
    }
    let wire: Box<dyn hw_sim::Wire> = match &args.wire {
        WireSpec::Gen => Box::new(
            hw_sim::wire::Generator::new(args.gen_config()).map_err(|e| RunError::Usage(format!("--wire gen: {e}")))?,
        ),
    };
    let sim_cfg = SimConfig { flow_control: !args.lossy, ..SimConfig::default() };
    let (nic, engine) = SimNic::new(sim_cfg, wire);
    let dev: Arc<dyn Device> = nic.clone();

    let mut igb = Igb::init(dev.clone(), IgbConfig { max_frame: 9216, ..IgbConfig::default() })?;
    let ring_size = args.ring_size;
    let pages = PagePool::new(
        igb.dma(),
        PagePoolConfig {
            buffers: args.pages.unwrap_or(ring_size * 2 + args.batch * 16),
            buf_len: args.payload_buf,
            headroom: args.headroom,
            ..PagePoolConfig::default()
        },
    )?;
    let hdrs = HeaderPool::new(
        igb.dma(),
        HeaderPoolConfig { buffers: ring_size * 2 + args.batch * 2, slot: args.hdr_buf, ..HeaderPoolConfig::default() },
    )?;
    let rx_cfg = RxConfig { queue: 0, ring_size, split: args.header_split, max_descs_per_packet: 64 };
    let mut ring = RxRing::new(dev.clone(), igb.dma(), rx_cfg, pages, hdrs)?;
    igb.enable_rx();

    let mut sim = match args.sim_mode {
        SimMode::Stepped => Sim::Stepped(Box::new(engine)),
        SimMode::Thread => {
            let core = args.sim_core;
            if let Some(c) = core {
                // Fail early and clearly rather than inside the thread.
                pipeline::affinity::check_core(c).map_err(RunError::Usage)?;
            }
            let t = engine.spawn_with(move || {
                if let Some(c) = core {
                    if let Err(e) = pipeline::pin_current_thread(c) {
                        tracing::warn!("simulator thread: {e}");
                    }
                }
            });
            Sim::Thread(t.map_err(|e| RunError::Other(format!("cannot start the simulator thread: {e}")))?)
        }
    };
    if let Some(core) = args.core {
        pipeline::pin_current_thread(core).map_err(RunError::Usage)?;
    }

    let mut batch = ring.new_batch(args.batch);
    let mut r = Recv::default();
    let start = Instant::now();
    let cpu0 = signals::thread_cpu_ns();
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let mut next_report = start + Duration::from_secs(1);
    let mut last = (start, 0u64, 0u64);
    let mut iter: u64 = 0;
    loop {
        // Never harvest past --packets.
        let budget = args.packets.map_or(args.batch, |max| args.batch.min((max - ring.stats().packets) as usize));
        if let Sim::Stepped(engine) = &mut sim {
            // Device work happens outside the timed section.
            engine.step(budget);
        }
        let t0 = Instant::now();
        let n = ring.poll(&mut batch, budget);
        if n > 0 {
            if args.mode == Mode::Read {
                for p in batch.iter() {
                    r.fold = r.fold.wrapping_add(read_all(p.header()));
                    for s in p.segments() {
                        r.fold = r.fold.wrapping_add(read_all(s));
                    }
                }
            }
            ring.recycle(&mut batch);
            r.busy_ns += t0.elapsed().as_nanos() as u64;
            r.polls_nonempty += 1;
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
                let s = nic.stats();
                eprintln!(
                    "rxsink: {:6.1}s {:8.3} Mpps {:7.3} Gbit/s drops {} missed {}",
                    (now - start).as_secs_f64(),
                    dp as f64 / secs / 1e6,
                    db as f64 * 8.0 / secs / 1e9,
                    st.drops_total(),
                    s.rx_missed
                );
                last = (now, st.packets, st.bytes);
                next_report = now + Duration::from_secs(1);
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ns = signals::thread_cpu_ns() - cpu0;

    // Orderly stop: device thread first (no DMA after this), then the ring
    // takes back every posted buffer, then the pools prove nothing leaked.
    drop(batch);
    if let Sim::Thread(t) = sim {
        sim = Sim::Stepped(Box::new(t.stop()));
    }
    drop(sim);
    igb.disable();
    let stop_err = ring.stop().err();
    let hw = igb.read_stats();
    let st = *ring.stats();
    let sim_stats = nic.stats();
    let (pages, hdrs) = ring.pools();
    let page_audit = pages.audit();
    let hdr_audit = hdrs.audit();
    let page_stats = pages.stats();
    let hdr_stats = hdrs.stats();
    if let Some(e) = stop_err {
        tracing::warn!("{e}");
    }

    let mut drops = serde_json::Map::new();
    for reason in driver::DropReason::ALL {
        drops.insert(reason.name().into(), st.drop_count(reason).into());
    }
    drops.insert("missed".into(), hw.missed_packets.into());
    let pps = st.packets as f64 / seconds;
    Ok(json!({
        "device": dev.name(),
        "wire": args.wire.to_string(),
        "mode": args.mode.to_string(),
        "header_split": args.header_split.to_string(),
        "sim_mode": args.sim_mode.to_string(),
        "batch": args.batch,
        "ring_size": ring_size,
        "frame_size": args.frame_size.to_string(),
        "packets": st.packets,
        "bytes": st.bytes,
        "seconds": seconds,
        "pps": pps,
        "gbps": st.bytes as f64 * 8.0 / seconds / 1e9,
        "ns_per_packet": if st.packets > 0 { r.busy_ns as f64 / st.packets as f64 } else { 0.0 },
        "rx_thread_cpu_seconds": cpu_ns as f64 / 1e9,
        "polls_nonempty": r.polls_nonempty,
        "packets_per_poll": if r.polls_nonempty > 0 { st.packets as f64 / r.polls_nonempty as f64 } else { 0.0 },
        "drops": drops,
        "hbo": st.hbo,
        "dummy_headers": st.dummy_headers,
        "refill_short": st.refill_short,
        "pool": page_stats,
        "header_pool": hdr_stats,
        "dma_faults": sim_stats.dma_faults,
        "hw": {
            "gprc": hw.good_packets_rx,
            "gorc": hw.good_octets_rx,
            "mpc": hw.missed_packets,
        },
        "leaked_pages": page_audit.lent,
        "leaked_headers": hdr_audit.lent,
        "read_fold": r.fold,
    }))
}

#[derive(Default)]
struct Recv {
    /// Wall time spent in poll + processing + recycle for polls that
    /// returned packets (the RX thread busy-polls, so this is its CPU time
    /// for that work; the simulator's work is never inside it).
    busy_ns: u64,
    polls_nonempty: u64,
    /// A fold of every byte read in `read` mode (so the reads cannot be
    /// optimised away, and runs can be compared).
    fold: u64,
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
