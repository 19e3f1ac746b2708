//! Core pinning for per-queue threads. Owns nothing but the one call; apps
//! use it so each queue's thread stays on the core that polls its ring.
//! Also [`line_round_trip_ns`]: how far apart two cores are, for
//! benchmarks on a shared host.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of the fixed `cpu_set_t` that `core_affinity` fills in; a larger
/// CPU number would index past it.
const MAX_CPUS: usize = 1024;

/// Pins the calling thread to CPU `core` (the kernel's CPU number).
///
/// Works from a thread that is already pinned elsewhere (threads inherit
/// their parent's mask, so checking against the current mask would refuse a
/// second core). Fails with a readable message when the core does not exist
/// or is outside this process's cpuset.
pub fn pin_current_thread(core: usize) -> Result<(), String> {
    if core < MAX_CPUS && core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        return Ok(());
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    Err(format!("cannot pin to core {core}: it does not exist or this process may not use it (online CPUs: {online})"))
}

/// Checks that a thread could be pinned to `core`, without moving the
/// caller (tries on a scratch thread).
pub fn check_core(core: usize) -> Result<(), String> {
    std::thread::spawn(move || pin_current_thread(core))
        .join()
        .unwrap_or_else(|_| Err(format!("cannot check core {core}")))
}

/// A cache line of its own.
#[repr(align(128))]
struct Line(AtomicU64);

/// Median time, in nanoseconds, for one cache line to go from core `a` to
/// core `b` and back: two threads pinned there take turns writing a counter
/// the other waits for, `rounds` round trips, timed in 16 chunks.
///
/// This is what a pipeline that hands buffers from one core to another
/// pays per hand-off, and on a shared host it is what moves: a VM's two
/// vCPUs may sit on cores that share a cache (tens of ns) or not (hundreds).
/// Benchmarks print it next to their figures. Fails if a core cannot be
/// used, or if the other thread has not answered within a second (it was
/// not scheduled: `a == b` on a busy core, for example).
pub fn line_round_trip_ns(a: usize, b: usize, rounds: u64) -> Result<f64, String> {
    const CHUNKS: u64 = 16;
    check_core(a)?;
    check_core(b)?;
    let per_chunk = rounds.div_ceil(CHUNKS).max(1);
    let total = per_chunk * CHUNKS;
    let line = Arc::new(Line(AtomicU64::new(0)));
    // Spins until the line holds `want`, or gives up after a second.
    let wait = |line: &Line, want: u64| -> Result<(), String> {
        let mut spins = 0u32;
        let mut since = None;
        while line.0.load(Ordering::Acquire) != want {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_secs(1) {
                    return Err("the other core did not answer within 1 s".into());
                }
            }
        }
        Ok(())
    };
    let echo = {
        let line = Arc::clone(&line);
        std::thread::spawn(move || -> Result<(), String> {
            pin_current_thread(b)?;
            line.0.store(1, Ordering::Release);
            for i in 1..=total {
                wait(&line, 2 * i)?;
                line.0.store(2 * i + 1, Ordering::Release);
            }
            Ok(())
        })
    };
    let timed = std::thread::spawn(move || -> Result<Vec<f64>, String> {
        pin_current_thread(a)?;
        wait(&line, 1)?;
        let mut chunks = Vec::with_capacity(CHUNKS as usize);
        let mut i = 0;
        for _ in 0..CHUNKS {
            let t0 = Instant::now();
            for _ in 0..per_chunk {
                i += 1;
                line.0.store(2 * i, Ordering::Release);
                wait(&line, 2 * i + 1)?;
            }
            chunks.push(t0.elapsed().as_nanos() as f64 / per_chunk as f64);
        }
        Ok(chunks)
    });
    fn joined<T>(r: std::thread::Result<Result<T, String>>) -> Result<T, String> {
        r.unwrap_or_else(|_| Err("a round-trip thread panicked".into()))
    }
    let chunks = joined(timed.join());
    // The echo thread ends on its own: all rounds done, or its own wait
    // timed out once the timing thread stopped answering.
    let echoed = joined(echo.join());
    let mut chunks = chunks?;
    echoed?;
    chunks.sort_by(f64::total_cmp);
    Ok(chunks[chunks.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "calls sched_setaffinity: not supported by Miri")]
    fn round_trip_between_two_cores_and_errors() {
        let cores = core_affinity::get_core_ids().unwrap();
        let (first, last) = (cores[0].id, cores[cores.len() - 1].id);
        let ns = line_round_trip_ns(first, last, 2000).unwrap();
        // Anything from a shared L1 to another socket; not zero, not seconds.
        assert!(ns > 1.0 && ns < 1e6, "{ns} ns");
        let err = line_round_trip_ns(first, MAX_CPUS, 10).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = line_round_trip_ns(MAX_CPUS, first, 10).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "reads /sys and calls sched_setaffinity: not supported by Miri"
    )]
    fn pins_and_repins_and_rejects_missing_cores() {
        let cores = core_affinity::get_core_ids().unwrap();
        let (first, last) = (cores[0].id, cores[cores.len() - 1].id);
        // Scratch thread, so the test harness thread keeps its mask.
        std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            assert_eq!(
                core_affinity::get_core_ids().unwrap(),
                vec![core_affinity::CoreId { id: first }]
            );
            // A pinned thread can move to another allowed core.
            pin_current_thread(last).unwrap();
            assert!(check_core(first).is_ok());
            assert!(check_core(MAX_CPUS).is_err());
            for missing in [MAX_CPUS - 1, MAX_CPUS, 1 << 40] {
                let err = pin_current_thread(missing).unwrap_err();
                assert!(err.contains("does not exist"), "{err}");
            }
        })
        .join()
        .unwrap();
    }
}
