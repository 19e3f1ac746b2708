//! SIGINT / SIGTERM turn into a flag the receive loop polls, so a stop is
//! always clean: rings disabled, every page back in its pool, summary printed.

pub use pipeline::os::{stop_requested, thread_cpu_ns};

/// Installs the handlers. Call once, early.
pub fn install() -> Result<(), String> {
    pipeline::os::install_stop_signals()
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
