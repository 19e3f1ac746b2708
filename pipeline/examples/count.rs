//! Counts the frames and bytes a port receives, on any backend, using only
//! the public API: open a port, poll its queues, check their health, stop
//! it and audit every buffer.
//!
//! ```text
//! cargo run --release -p pipeline --example count -- [SPEC] [SECONDS]
//! ```
//! SPEC: `sim` (the simulator's generator, the default), `sim:tap:IFNAME`,
//! `sim:pcap:FILE`, `vfio:0000:03:00.0`. Exit status 1 if a buffer leaked.

use pipeline::port::{Port, PortConfig, SimMode};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec = args.next().unwrap_or_else(|| "sim".into()).parse()?;
    let seconds: f64 = args.next().map_or(Ok(2.0), |s| s.parse())?;
    let mut cfg = PortConfig::default();
    cfg.sim.mode = SimMode::Thread; // the simulator runs beside us, like a NIC
    let mut port = Port::open(&spec, &cfg)?;
    let mut queues = port.take_queues();
    port.start()?;

    let mut batch = queues[0].new_batch(32);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let mut next_line = start + Duration::from_secs(1);
    let mut round = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for q in &mut queues {
            frames += q.poll(&mut batch, 32) as u64;
            bytes += batch.iter().map(|p| p.len() as u64).sum::<u64>();
            q.recycle(&mut batch);
        }
        round += 1;
        if round.is_multiple_of(64) {
            let now = Instant::now();
            for q in &mut queues {
                // Device resets and stalled queues are recovered here.
                if let pipeline::port::Health::Failed(e) = q.check(now) {
                    return Err(e.into());
                }
            }
            if now >= next_line {
                println!(
                    "{:5.1} s: {frames} frames, {bytes} bytes",
                    (now - start).as_secs_f64()
                );
                next_line += Duration::from_secs(1);
            }
        }
    }
    let report = port.shutdown(queues);
    println!(
        "{frames} frames, {bytes} bytes in {seconds} s; device: {} received, {} missed; leaked buffers: {}",
        report.hw.good_packets_rx,
        report.hw.missed_packets,
        report.leaked()
    );
    if report.leaked() != 0 {
        std::process::exit(1);
    }
    Ok(())
}
