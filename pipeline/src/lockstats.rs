//! Lock instrumentation for the pools' shared free lists: [`TimedMutex`], a
//! `Mutex` that counts acquisitions and failed try-locks and keeps wait and
//! hold time histograms (hdrhistogram), and [`LockStats`], the figures every
//! pool strategy reports in the same shape.
//!
//! This module owns the cheap clock and the sampling policy, so measuring
//! never dominates what it measures:
//!
//! - **Clock**: `rdtsc` on x86_64 (about 20 cycles, no fence), converted to
//!   nanoseconds with a factor calibrated once against `Instant` over 5 ms
//!   on first use; elsewhere `Instant` since a process-wide epoch.
//! - **Wait time** is measured only when `try_lock` fails (the contended
//!   case). An acquisition that got the lock at the first try waited 0 ns;
//!   those zeros are added to the histogram in bulk when the figures are read.
//!   So `wait_ns_*` covers every acquisition, and an uncontended one costs no
//!   clock read.
//! - **Hold time** is sampled: every contended acquisition and 1 in
//!   [`HOLD_SAMPLE`] of the others read the clock at acquisition and at
//!   release. `hold_samples` says how many went into `hold_ns_*`.
//!
//! Counters and histograms live inside the mutex, so updating them needs no
//! atomics: they are written only by the lock holder.

use crate::sync::{Mutex, MutexGuard, TryLockError};
use hdrhistogram::Histogram;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;
use std::time::Instant;

/// One uncontended acquisition in this many has its hold time measured.
pub const HOLD_SAMPLE: u64 = 16;

/// Figures for one lock, the same for every pool strategy (a lock-free
/// strategy reports zeros). Times are nanoseconds.
#[derive(serde::Serialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct LockStats {
    /// Times the lock was taken.
    pub lock_acquisitions: u64,
    /// Acquisitions whose `try_lock` failed first (they then blocked).
    pub contended: u64,
    /// Wait before getting the lock, over every acquisition.
    pub wait_ns_p50: f64,
    pub wait_ns_p99: f64,
    pub wait_ns_max: f64,
    /// Time the lock was held, over the sampled acquisitions.
    pub hold_ns_p50: f64,
    pub hold_ns_p99: f64,
    /// Acquisitions whose hold time was measured.
    pub hold_samples: u64,
}

impl LockStats {
    /// Failed try-locks as a percentage of acquisitions (0 when none).
    pub fn trylock_fail_pct(&self) -> f64 {
        if self.lock_acquisitions == 0 {
            0.0
        } else {
            100.0 * self.contended as f64 / self.lock_acquisitions as f64
        }
    }

    /// Acquisitions per packet, given the caller's packet count (0 when no
    /// packets).
    pub fn per_packet(&self, packets: u64) -> f64 {
        if packets == 0 {
            0.0
        } else {
            self.lock_acquisitions as f64 / packets as f64
        }
    }
}

/// Reads the cheap clock, in ticks (see [`ticks_to_ns`]).
#[inline(always)]
pub fn now_ticks() -> u64 {
    // Miri cannot run rdtsc: it takes the portable clock below.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        // SAFETY: rdtsc has no preconditions and is available on every
        // x86_64 CPU; it only reads the time-stamp counter.
        unsafe { std::arch::x86_64::_rdtsc() }
    }
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    {
        epoch().elapsed().as_nanos() as u64
    }
}

#[cfg(any(not(target_arch = "x86_64"), miri))]
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds per tick, calibrated once.
pub fn ns_per_tick() -> f64 {
    static NS_PER_TICK: OnceLock<f64> = OnceLock::new();
    *NS_PER_TICK.get_or_init(|| {
        if cfg!(any(not(target_arch = "x86_64"), miri)) {
            return 1.0;
        }
        let (t0, c0) = (Instant::now(), now_ticks());
        while t0.elapsed().as_micros() < 5_000 {
            std::hint::spin_loop();
        }
        let (ns, ticks) = (t0.elapsed().as_nanos() as f64, now_ticks().wrapping_sub(c0));
        if ticks == 0 {
            1.0
        } else {
            ns / ticks as f64
        }
    })
}

/// Converts a tick count from [`now_ticks`] to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> f64 {
    ticks as f64 * ns_per_tick()
}

fn histogram() -> Histogram<u64> {
    // 2 significant digits up to ~10^12 ticks; cannot fail for these bounds.
    Histogram::new_with_bounds(1, 1 << 40, 2)
        .unwrap_or_else(|_| Histogram::new(2).expect("2 sigfig is valid"))
}

struct Inner<T> {
    data: T,
    acquisitions: u64,
    contended: u64,
    /// Contended waits only (ticks); uncontended zeros are added on read.
    wait: Histogram<u64>,
    hold: Histogram<u64>,
}

/// A `Mutex<T>` that keeps [`LockStats`]. A poisoned lock (a holder
/// panicked) is taken over rather than propagated: the data are plain free
/// lists, valid after any panic between operations.
pub struct TimedMutex<T> {
    inner: Mutex<Inner<T>>,
}

/// Guard of a [`TimedMutex`]; records the hold time when dropped, if sampled.
pub struct TimedGuard<'a, T> {
    guard: MutexGuard<'a, Inner<T>>,
    /// Tick at acquisition, or 0 when this acquisition is not sampled.
    start: u64,
}

impl<T> TimedMutex<T> {
    pub fn new(data: T) -> Self {
        TimedMutex {
            inner: Mutex::new(Inner {
                data,
                acquisitions: 0,
                contended: 0,
                wait: histogram(),
                hold: histogram(),
            }),
        }
    }

    /// Takes the lock: `try_lock` first; if that fails, counts the
    /// contention and times the blocking wait.
    #[inline]
    pub fn lock(&self) -> TimedGuard<'_, T> {
        let (mut guard, waited) = match self.inner.try_lock() {
            Ok(g) => (g, None),
            Err(TryLockError::Poisoned(p)) => (p.into_inner(), None),
            Err(TryLockError::WouldBlock) => {
                let t0 = now_ticks();
                let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                (g, Some(now_ticks().wrapping_sub(t0)))
            }
        };
        guard.acquisitions += 1;
        let sample = match waited {
            Some(w) => {
                guard.contended += 1;
                guard.wait.saturating_record(w);
                true
            }
            None => guard.acquisitions % HOLD_SAMPLE == 0,
        };
        TimedGuard {
            guard,
            start: if sample { now_ticks().max(1) } else { 0 },
        }
    }

    /// The figures so far.
    pub fn stats(&self) -> LockStats {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = g.wait.clone();
        let _ = wait.record_n(0, g.acquisitions.saturating_sub(g.contended));
        let q = |h: &Histogram<u64>, p: f64| {
            if h.is_empty() {
                0.0
            } else {
                ticks_to_ns(h.value_at_quantile(p))
            }
        };
        LockStats {
            lock_acquisitions: g.acquisitions,
            contended: g.contended,
            wait_ns_p50: q(&wait, 0.5),
            wait_ns_p99: q(&wait, 0.99),
            wait_ns_max: if wait.is_empty() {
                0.0
            } else {
                ticks_to_ns(wait.max())
            },
            hold_ns_p50: q(&g.hold, 0.5),
            hold_ns_p99: q(&g.hold, 0.99),
            hold_samples: g.hold.len(),
        }
    }

    /// Reads the data without counting an acquisition (audits, tests).
    pub fn peek<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&g.data)
    }
}

impl<T> Deref for TimedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard.data
    }
}

impl<T> DerefMut for TimedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard.data
    }
}

impl<T> Drop for TimedGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.start != 0 {
            let held = now_ticks().wrapping_sub(self.start);
            self.guard.hold.saturating_record(held);
        }
    }
}

impl<T> std::fmt::Debug for TimedMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedMutex")
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "times real lock waits and calibrates a clock: meaningless under Miri"
    )]
    fn counts_acquisitions_and_samples_hold_time() {
        let m = TimedMutex::new(Vec::<u32>::new());
        for i in 0..100 {
            m.lock().push(i);
        }
        let s = m.stats();
        assert_eq!((s.lock_acquisitions, s.contended), (100, 0));
        assert_eq!(s.hold_samples, 100 / HOLD_SAMPLE);
        assert_eq!((s.wait_ns_p50, s.wait_ns_max), (0.0, 0.0));
        assert_eq!(m.peek(|v| v.len()), 100);
        assert_eq!(s.trylock_fail_pct(), 0.0);
        assert_eq!(s.per_packet(50), 2.0);
        assert_eq!(LockStats::default().per_packet(0), 0.0);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "times real lock waits and calibrates a clock: meaningless under Miri"
    )]
    fn contention_is_counted_and_timed() {
        let m = Arc::new(TimedMutex::new(0u64));
        let g = m.lock();
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            *m2.lock() += 1;
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(g);
        t.join().unwrap();
        let s = m.stats();
        assert_eq!((s.lock_acquisitions, s.contended), (2, 1));
        assert!(
            s.wait_ns_max > 1_000_000.0,
            "waited ~20 ms, measured {} ns",
            s.wait_ns_max
        );
        assert_eq!(s.trylock_fail_pct(), 50.0);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "times real lock waits and calibrates a clock: meaningless under Miri"
    )]
    fn clock_is_calibrated() {
        let f = ns_per_tick();
        assert!(f > 0.01 && f < 100.0, "{f}");
    }
}
