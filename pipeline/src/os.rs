//! What the data-path threads ask the operating system for besides memory
//! and core pinning ([`crate::affinity`]): a clean stop on SIGINT / SIGTERM,
//! and CPU time (of the calling thread, of the process). Owns the `unsafe`
//! of those few system calls, so applications and the stack need none.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Turns SIGINT and SIGTERM into a flag the receive loops poll
/// ([`stop_requested`]), so a stop is always clean: rings disabled, every
/// buffer back in its pool, summary printed. Call once, early.
pub fn install_stop_signals() -> Result<(), String> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only performs
        // an atomic store, which is async-signal-safe; sigaction is given a
        // fully initialised struct (all zeroes is a valid `sigaction`).
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(format!(
                "cannot install signal handler: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_signals`].
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User and system CPU time of the whole process so far, in microseconds
/// (getrusage), or `None` if the kernel refused.
pub fn process_cpu_us() -> Option<(f64, f64)> {
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we pass.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |tv: libc::timeval| tv.tv_sec as f64 * 1e6 + tv.tv_usec as f64;
    (rc == 0).then(|| (us(ru.ru_utime), us(ru.ru_stime)))
}

/// The process's resident set size in KiB (VmRSS of /proc/self/status), or
/// 0 where that file is not there.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "system calls Miri does not model")]
    fn cpu_times_move_forward() {
        let t0 = thread_cpu_ns();
        let (u0, s0) = process_cpu_us().expect("getrusage");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(thread_cpu_ns() > t0);
        let (u1, s1) = process_cpu_us().expect("getrusage");
        assert!(u1 + s1 > u0 + s0);
        assert!(!stop_requested());
    }
}
