//! How far apart two cores are: the median round trip of one cache line
//! between them ([`pipeline::affinity::line_round_trip_ns`]).
//!
//! `cargo run --release -p pipeline --example core_rtt [A] [B] [ROUNDS]`
//! (default cores 0 and 1, 200000 round trips) prints nanoseconds.
//!
//! On this project's 2-vCPU VM it reads 60-80 ns most of the time and
//! 300-350 ns in the host's slow phases, when every figure that moves
//! data between the two cores halves (`scripts/bench-pair.sh` prints it
//! before each round).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> Result<u64, String> {
        match args.get(i) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| format!("not a number: {s:?}")),
        }
    };
    let run = || -> Result<f64, String> {
        let (a, b, rounds) = (arg(0, 0)?, arg(1, 1)?, arg(2, 200_000)?);
        pipeline::affinity::line_round_trip_ns(a as usize, b as usize, rounds)
    };
    match run() {
        Ok(ns) => {
            println!("{ns:.0}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("core_rtt: {e}");
            ExitCode::from(2)
        }
    }
}
