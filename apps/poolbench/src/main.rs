//! `poolbench`: measures header-pool lock contention (the "HW GRO dragon")
//! for each [`HdrPoolStrategy`], over thread counts and GRO factors.
//!
//! Each cell drives one [`HeaderPool`] the way an RX queue and its
//! application threads do. The RX thread keeps a ring of `--ring` posted
//! header slots (one per descriptor). For each coalesced packet of GRO `n`
//! segments it completes `n` descriptors: keeps the first header (writes 8
//! bytes into it, as the device would), recycles the `n - 1` dummies with
//! the owner's `recycle`, and posts `n` fresh slots with `alloc`. Real
//! headers go to the application side in batches of `--batch`: with one
//! thread the same thread gives them back; with `t >= 2` threads, `t - 1`
//! application threads take batches from a bounded queue (round robin),
//! read the header and give the batch back through the foreign path
//! (`BufReturn::give_back`, one call per batch). Threads are pinned.
//!
//! Figures: `mops` = million packets per second on the RX thread's clock
//! (median of `--repeats`), `ns_per_op` = ns per packet, lock figures from
//! the pool's [`pipeline::LockStats`] of the median run.

mod cli;
mod plot;

use clap::Parser;
use cli::Cli;
use crossbeam_queue::ArrayQueue;
use driver::{Buf, BufPool, BufReturn, DmaSpace};
use pipeline::{HdrPoolStrategy, HeaderPool, HeaderPoolConfig, LockStats};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver::dma::NoIommu;

/// One table / JSON row.
#[derive(serde::Serialize, Clone, Debug)]
pub struct Row {
    pub strategy: HdrPoolStrategy,
    pub threads: usize,
    pub gro: usize,
    /// Million packets per second, median of the repeats.
    pub mops: f64,
    pub mops_min: f64,
    pub ns_per_op: f64,
    pub lock_acquisitions_per_packet: f64,
    pub trylock_fail_pct: f64,
    pub wait_ns_p50: f64,
    pub wait_ns_p99: f64,
    pub wait_ns_max: f64,
    pub hold_ns_p50: f64,
    pub packets: u64,
    pub lock_acquisitions: u64,
    /// Slots still lent after the run (must be 0).
    pub lent_after: usize,
}

struct Run {
    packets: u64,
    secs: f64,
    locks: LockStats,
    lent_after: usize,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => cli::exit_on_parse_error(e),
    };
    let cores = cli::cores();
    let plan = match cli.plan(&cores) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("poolbench: {msg}");
            std::process::exit(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("poolbench: warning: debug build; use --release for meaningful numbers");
    }
    let space = DmaSpace::new(Arc::new(NoIommu));
    let mut rows = Vec::new();
    for &gro in &plan.gro {
        for &threads in &plan.threads {
            for &strategy in &plan.strategies {
                let mut runs: Vec<Run> = Vec::with_capacity(plan.repeats);
                for _ in 0..plan.repeats {
                    match run_cell(&space, &plan, &cores, strategy, threads, gro) {
                        Ok(r) => runs.push(r),
                        Err(msg) => {
                            eprintln!("poolbench: {msg}");
                            std::process::exit(1);
                        }
                    }
                }
                let row = summarize(strategy, threads, gro, runs);
                if !plan.json {
                    if rows.is_empty() {
                        print_header();
                    }
                    print_row(&row);
                }
                rows.push(row);
            }
        }
    }
    if plan.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("poolbench: cannot serialize results: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(path) = &plan.plot {
        if let Err(e) = plot::write_svg(path, &rows) {
            eprintln!("poolbench: cannot write plot {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    if rows.iter().any(|r| r.lent_after != 0) {
        eprintln!("poolbench: a pool did not get every slot back (lent_after != 0)");
        std::process::exit(1);
    }
}

fn summarize(strategy: HdrPoolStrategy, threads: usize, gro: usize, mut runs: Vec<Run>) -> Row {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let min = rate(&runs[0]);
    let med = &runs[runs.len() / 2];
    let mops = rate(med);
    let l = med.locks;
    Row {
        strategy,
        threads,
        gro,
        mops,
        mops_min: min,
        ns_per_op: if mops > 0.0 {
            1e3 / mops
        } else {
            f64::INFINITY
        },
        lock_acquisitions_per_packet: l.per_packet(med.packets),
        trylock_fail_pct: l.trylock_fail_pct(),
        wait_ns_p50: l.wait_ns_p50,
        wait_ns_p99: l.wait_ns_p99,
        wait_ns_max: l.wait_ns_max,
        hold_ns_p50: l.hold_ns_p50,
        packets: med.packets,
        lock_acquisitions: l.lock_acquisitions,
        lent_after: runs.iter().map(|r| r.lent_after).max().unwrap_or(0),
    }
}

fn rate(r: &Run) -> f64 {
    if r.secs > 0.0 {
        r.packets as f64 / r.secs / 1e6
    } else {
        0.0
    }
}

fn print_header() {
    println!(
        "{:<8} {:>7} {:>4} {:>9} {:>9} {:>9} {:>12} {:>9} {:>9} {:>9} {:>11}",
        "strategy",
        "threads",
        "gro",
        "Mpps",
        "Mpps min",
        "ns/pkt",
        "locks/pkt",
        "trylock%",
        "wait p50",
        "wait p99",
        "wait max"
    );
}

fn print_row(r: &Row) {
    println!(
        "{:<8} {:>7} {:>4} {:>9.2} {:>9.2} {:>9.1} {:>12.4} {:>9.2} {:>9.0} {:>9.0} {:>11.0}",
        r.strategy.name(),
        r.threads,
        r.gro,
        r.mops,
        r.mops_min,
        r.ns_per_op,
        r.lock_acquisitions_per_packet,
        r.trylock_fail_pct,
        r.wait_ns_p50,
        r.wait_ns_p99,
        r.wait_ns_max
    );
}

/// One measurement of one cell.
fn run_cell(
    space: &Arc<DmaSpace>,
    plan: &cli::Plan,
    cores: &[usize],
    strategy: HdrPoolStrategy,
    threads: usize,
    gro: usize,
) -> Result<Run, String> {
    let cfg = HeaderPoolConfig {
        strategy,
        buffers: plan.buffers,
        slot: plan.slot,
        batch: 64,
    };
    let mut pool = HeaderPool::new(space, cfg).map_err(|e| e.to_string())?;
    let returner = pool.returner();
    let apps = threads - 1;
    // Bounded hand-off per application thread: backpressure, no allocation.
    let queues: Vec<Arc<ArrayQueue<Vec<Buf>>>> =
        (0..apps).map(|_| Arc::new(ArrayQueue::new(8))).collect();
    let empties: Arc<ArrayQueue<Vec<Buf>>> = Arc::new(ArrayQueue::new(16 * apps.max(1) + 16));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::with_capacity(apps);
    for (i, q) in queues.iter().enumerate() {
        let (q, empties, stop, ret) = (q.clone(), empties.clone(), stop.clone(), returner.clone());
        let core = cores[(i + 1) % cores.len()];
        let pin = plan.pin;
        workers.push(std::thread::spawn(move || {
            app_thread(q, empties, stop, ret, pin.then_some(core))
        }));
    }
    if plan.pin {
        pipeline::pin_current_thread(cores[0])?;
    }

    let ring_size = plan.ring.max(gro);
    let mut ring: VecDeque<Buf> = VecDeque::with_capacity(ring_size);
    while ring.len() < ring_size {
        ring.push_back(pool.alloc().ok_or("header pool smaller than the ring")?);
    }
    let mut batch: Vec<Buf> = Vec::with_capacity(plan.batch);
    let mut next_app = 0;
    let mut packets = 0u64;
    let deadline = Duration::from_millis(plan.duration_ms);
    let t0 = Instant::now();
    'run: loop {
        for _ in 0..64 {
            // Complete `gro` descriptors: one real header, gro-1 dummies.
            let Some(mut real) = ring.pop_front() else {
                break 'run;
            };
            // Slots are at least 64 bytes.
            real.as_mut_slice(8).copy_from_slice(&packets.to_ne_bytes());
            batch.push(real);
            for _ in 1..gro {
                if let Some(d) = ring.pop_front() {
                    pool.recycle(d);
                }
            }
            // Refill the ring (the application may still hold slots).
            while ring.len() < ring_size {
                match pool.alloc() {
                    Some(h) => ring.push_back(h),
                    None => {
                        if t0.elapsed() > deadline * 4 + Duration::from_secs(2) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(format!("{strategy}: header pool stuck empty"));
                        }
                        std::hint::spin_loop();
                        if apps == 0 {
                            break;
                        }
                    }
                }
            }
            packets += 1;
            if batch.len() >= plan.batch {
                let full = std::mem::replace(
                    &mut batch,
                    empties
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(plan.batch)),
                );
                if apps == 0 {
                    let mut full = full;
                    consume(&full);
                    returner.give_back(&mut full);
                    batch = full;
                } else {
                    let mut item = full;
                    loop {
                        match queues[next_app].push(item) {
                            Ok(()) => break,
                            Err(back) => {
                                item = back;
                                std::hint::spin_loop();
                            }
                        }
                    }
                    next_app = (next_app + 1) % apps;
                }
            }
        }
        if t0.elapsed() >= deadline {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .map_err(|_| "application thread panicked".to_string())?;
    }
    returner.give_back(&mut batch);
    // What the application threads left in their queues.
    for q in &queues {
        while let Some(mut b) = q.pop() {
            returner.give_back(&mut b);
        }
    }
    ring.into_iter().for_each(|h| pool.recycle(h));
    let locks = pool.lock_stats();
    let lent_after = pool.audit().lent;
    Ok(Run {
        packets,
        secs,
        locks,
        lent_after,
    })
}

/// Reads each real header (the stack would parse it).
#[inline]
fn consume(batch: &[Buf]) -> u64 {
    // Each slot holds 8 bytes written by the RX side before the hand-off.
    batch.iter().fold(0u64, |acc, b| {
        acc.wrapping_add(<[u8; 8]>::try_from(b.as_slice(8)).map_or(0, u64::from_ne_bytes))
    })
}

fn app_thread(
    q: Arc<ArrayQueue<Vec<Buf>>>,
    empties: Arc<ArrayQueue<Vec<Buf>>>,
    stop: Arc<AtomicBool>,
    ret: Arc<dyn BufReturn>,
    core: Option<usize>,
) -> u64 {
    if let Some(c) = core {
        // Pinning is best effort here; the RX thread already checked cores.
        let _ = pipeline::pin_current_thread(c);
    }
    let mut sum = 0u64;
    loop {
        match q.pop() {
            Some(mut b) => {
                sum = sum.wrapping_add(consume(&b));
                ret.give_back(&mut b);
                let _ = empties.push(b);
            }
            None if stop.load(Ordering::Relaxed) => {
                // Drain what is left, then stop.
                while let Some(mut b) = q.pop() {
                    ret.give_back(&mut b);
                }
                return sum;
            }
            None => std::hint::spin_loop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every strategy, one and two threads, GRO 1 and 16: the cell runs,
    /// counts packets and gets every slot back.
    #[test]
    fn every_cell_runs_and_returns_every_slot() {
        let cli = Cli::try_parse_from([
            "poolbench",
            "--duration-ms",
            "20",
            "--repeats",
            "1",
            "--no-pin",
        ])
        .unwrap();
        let cores = vec![0, 1];
        let plan = cli.plan(&cores).unwrap();
        let space = DmaSpace::new(Arc::new(NoIommu));
        for strategy in HdrPoolStrategy::ALL {
            for threads in [1, 2] {
                for gro in [1, 16] {
                    let run = run_cell(&space, &plan, &cores, strategy, threads, gro).unwrap();
                    assert!(run.packets > 0, "{strategy} t{threads} gro{gro}");
                    assert_eq!(run.lent_after, 0, "{strategy} t{threads} gro{gro}");
                    let row = summarize(strategy, threads, gro, vec![run]);
                    if strategy == HdrPoolStrategy::Locked {
                        // Every alloc and every return takes the lock.
                        assert!(
                            row.lock_acquisitions_per_packet >= 2.0 * gro as f64 - 0.5,
                            "{row:?}"
                        );
                    }
                    if matches!(strategy, HdrPoolStrategy::Packed | HdrPoolStrategy::Ring) {
                        assert_eq!(row.lock_acquisitions, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn json_rows_have_the_documented_keys() {
        let run = Run {
            packets: 10,
            secs: 1.0,
            locks: LockStats::default(),
            lent_after: 0,
        };
        let row = summarize(HdrPoolStrategy::Packed, 2, 16, vec![run]);
        let v = serde_json::to_value(vec![row]).unwrap();
        for key in [
            "strategy",
            "threads",
            "gro",
            "mops",
            "ns_per_op",
            "lock_acquisitions_per_packet",
            "trylock_fail_pct",
            "wait_ns_p50",
            "wait_ns_p99",
            "wait_ns_max",
        ] {
            assert!(v[0].get(key).is_some(), "{key}");
        }
        assert_eq!(v[0]["strategy"], "packed");
    }
}
