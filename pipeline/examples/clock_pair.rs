//! The cost of a pair of `Instant::now()` reads, the timing rxsink wraps
//! around every non-empty poll (README, "How `ns_per_packet` is measured").
//!
//! `cargo run --release -p pipeline --example clock_pair [core]`
//!
//! Times back-to-back pairs (`t0 = now(); t1 = now(); sum += t1 - t0`, as
//! rxsink does per poll) in 2000 chunks of 10^4 pairs and prints ns per
//! pair: the fastest chunk, the median chunk and the mean over all. On a
//! shared machine a chunk during which the thread was descheduled is slow,
//! so the fastest and the median chunk are the cost of the reads, the mean
//! includes the machine's noise. Also prints the kernel's clock source
//! (`tsc`: the vDSO reads the TSC without a system call).

use std::hint::black_box;
use std::time::{Duration, Instant};

const CHUNK: u32 = 10_000;
const CHUNKS: usize = 2000;

fn chunk() -> f64 {
    let mut sum = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..CHUNK {
        let t0 = Instant::now();
        let t1 = Instant::now();
        sum += t1 - t0;
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(CHUNK);
    black_box(sum);
    ns
}

fn main() {
    if let Some(core) = std::env::args().nth(1) {
        pipeline::pin_current_thread(core.parse().expect("core number")).unwrap();
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for meaningful numbers");
    }
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string());
    for _ in 0..100 {
        chunk(); // warm-up
    }
    let mut ns: Vec<f64> = (0..CHUNKS).map(|_| chunk()).collect();
    let mean = ns.iter().sum::<f64>() / ns.len() as f64;
    ns.sort_by(f64::total_cmp);
    println!(
        "clock source {source}: one Instant::now() pair (with the subtraction and sum): \
         fastest chunk {:.1} ns, median chunk {:.1} ns, mean {:.1} ns ({CHUNKS} chunks of {CHUNK} pairs)",
        ns[0],
        ns[CHUNKS / 2],
        mean
    );
}
