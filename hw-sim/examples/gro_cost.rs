//! Measures the simulator's cost per TCP segment with GRO off and on: the
//! time spent inside `SimEngine::step()` only, divided by the segments it
//! took off the wire, with the driver's RX ring consuming and refilling
//! between steps (its time is not counted).
//!
//! `cargo run --release -p hw-sim --example gro_cost [segments] [payload] [ring]`
//!
//! The generator sends TCP segments of `payload` bytes (default 1448, a
//! 1502-byte frame) for 64 flows in bursts of 16 segments per flow.

#[path = "../tests/common/mod.rs"]
mod common;

use common::RxSetup;
use driver::{RxConfig, SplitMode};
use hw_sim::wire::{FrameSize, GenConfig, Generator, Proto};
use hw_sim::{SimConfig, SimNic};
use std::time::{Duration, Instant};

struct Result {
    ns_per_segment: f64,
    segments_per_packet: f64,
}

fn run(
    gro: u32,
    split: SplitMode,
    payload: usize,
    segments: u64,
    ring_size: usize,
    batch: usize,
) -> Result {
    let gen = GenConfig {
        frame_size: FrameSize::Fixed(54 + payload),
        flows: 64,
        proto: Proto::Tcp,
        burst: 16,
        ..GenConfig::default()
    };
    let cfg = SimConfig {
        gro,
        ..SimConfig::default()
    };
    cfg.validate().expect("sim config");
    let (nic, mut engine) = SimNic::new(cfg, Box::new(Generator::new(gen).expect("generator")));
    let setup = RxSetup {
        split,
        ring: ring_size,
        pages: 2 * ring_size,
        max_descs_per_packet: RxConfig::default().max_descs_per_packet,
        ..RxSetup::default()
    };
    let (igb, mut ring) = common::bring_up(nic.clone(), &setup);
    let mut b = ring.new_batch(ring_size);
    let mut in_step = Duration::ZERO;
    let mut moved = 0u64;
    while moved < segments {
        let t = Instant::now();
        moved += engine.step(batch) as u64;
        in_step += t.elapsed();
        ring.poll(&mut b, ring_size);
        ring.recycle(&mut b);
    }
    common::stop_and_audit(&igb, &mut ring);
    let s = nic.stats();
    Result {
        ns_per_segment: in_step.as_nanos() as f64 / moved as f64,
        segments_per_packet: moved as f64 / s.rx_frames.max(1) as f64,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let segments: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let payload: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1448);
    let ring: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let batch = 256.min(ring / 2);
    for split in [SplitMode::Off, SplitMode::On, SplitMode::Always] {
        for gro in [1, 16] {
            let r = run(gro, split, payload, segments, ring, batch);
            println!(
                "split {split:<6} gro {gro:>2}: {payload} B TCP payload, ring {ring}, {batch} segments per step: {:6.1} ns per segment in step() ({:.1} segments per packet)",
                r.ns_per_segment, r.segments_per_packet
            );
        }
    }
}
