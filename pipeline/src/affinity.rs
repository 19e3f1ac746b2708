//! Core pinning for per-queue threads. Owns nothing but the one call; apps
//! use it so each queue's thread stays on the core that polls its ring.

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

#[cfg(test)]
mod tests {
    use super::*;

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
