//! Measures the simulator's cost per frame: the time spent inside
//! `SimEngine::step()` only, with the driver's RX ring consuming and
//! refilling between steps (its time is not counted).
//!
//! `cargo run --release -p hw-sim --example step_cost [frames] [size] [ring]`

#[path = "../tests/common/mod.rs"]
mod common;

use common::RxSetup;
use driver::{RxConfig, SplitMode};
use hw_sim::wire::{FrameSize, GenConfig, Generator};
use hw_sim::{SimConfig, SimNic};
use std::time::{Duration, Instant};

fn run(split: SplitMode, size: usize, frames: u64, batch: usize, ring_size: usize) -> (f64, u64) {
    let gen = Generator::new(GenConfig {
        frame_size: FrameSize::Fixed(size),
        flows: 64,
        ..GenConfig::default()
    })
    .expect("generator");
    let (nic, mut engine) = SimNic::new(SimConfig::default(), Box::new(gen));
    let setup = RxSetup {
        split,
        ring: ring_size,
        pages: 2 * ring_size,
        max_descs_per_packet: RxConfig::default().max_descs_per_packet,
        ..RxSetup::default()
    };
    let (igb, mut ring) = common::bring_up(nic.clone(), &setup);
    let mut b = ring.new_batch(batch);
    let mut in_step = Duration::ZERO;
    let mut moved = 0u64;
    let mut got = 0u64;
    while got < frames {
        let t = Instant::now();
        moved += engine.step(batch) as u64;
        in_step += t.elapsed();
        got += ring.poll(&mut b, batch) as u64;
        ring.recycle(&mut b);
    }
    common::stop_and_audit(&igb, &mut ring);
    (
        in_step.as_nanos() as f64 / moved as f64,
        nic.stats().rx_frames,
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let frames: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let ring: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
        for batch in [32, 256] {
            let (ns, rx) = run(split, size, frames, batch.min(ring / 2), ring);
            println!("split {split:<6} {size} B frames, ring {ring}, batch {:>3}: {ns:6.1} ns per frame in step() ({rx} frames)", batch.min(ring / 2));
        }
    }
}
