//! Faults the model injects on itself, so recovery can be tested without
//! anyone writing the device's registers behind the driver's back:
//!
//! - a **device reset** ([`SimNic::inject_reset`]): CTRL.RST as if the
//!   device reset itself; every queue stops, the link goes down until the
//!   driver restarts autonegotiation;
//! - a **stalled DMA engine** ([`SimNic::stall_queue`]): the queue's engine
//!   stops fetching and writing descriptors; frames steered to it are
//!   dropped and counted in its RQDPC (as with SRRCTL.DROP_EN) and in
//!   `SimStats::rx_stalled`. Only a device reset ends a stall.
//!
//! [`FaultSchedule`] fires either one every so many received bytes (the
//! model's own count, `SimStats::rx_bytes`), so a test sees the same number
//! of faults whatever the machine's speed. A stall hits the queue that
//! received the frame that crossed the mark.

use crate::nic::SimNic;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// When the model injects faults on itself. `None`: never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultSchedule {
    /// A device reset each time another this many bytes were received.
    pub reset_every: Option<u64>,
    /// A stalled queue each time another this many bytes were received.
    pub stall_every: Option<u64>,
}

/// Faults injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HookStats {
    pub resets: u64,
    pub stalls: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Hooks {
    /// Bit q: RX and TX queue q's DMA engine is stalled.
    pub(crate) stalled: AtomicU32,
    reset_every: AtomicU64,
    stall_every: AtomicU64,
    next_reset: AtomicU64,
    next_stall: AtomicU64,
    resets: AtomicU64,
    stalls: AtomicU64,
}

impl Hooks {
    /// Whether a schedule is set (one load per engine step).
    #[inline]
    pub(crate) fn scheduled(&self) -> bool {
        self.reset_every.load(Ordering::Relaxed) | self.stall_every.load(Ordering::Relaxed) != 0
    }
}

impl SimNic {
    /// The device resets itself now (CTRL.RST from inside).
    pub fn inject_reset(&self) {
        self.hooks.resets.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("sim: injected device reset");
        self.reset_device();
    }

    /// Queue `q`'s DMA engine stops until the next device reset.
    pub fn stall_queue(&self, q: u32) {
        if q < 32 {
            self.hooks.stalls.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(queue = q, "sim: injected queue stall");
            self.hooks.stalled.fetch_or(1 << q, Ordering::AcqRel);
        }
    }

    /// Bit q set: queue q is stalled.
    pub fn stalled_queues(&self) -> u32 {
        self.hooks.stalled.load(Ordering::Acquire)
    }

    /// Sets when the model injects faults on itself, counting from the
    /// bytes received so far.
    pub fn set_fault_schedule(&self, s: FaultSchedule) {
        let h = &self.hooks;
        let now = self.rx_bytes();
        h.next_reset
            .store(s.reset_every.map_or(0, |e| now + e), Ordering::Relaxed);
        h.next_stall
            .store(s.stall_every.map_or(0, |e| now + e), Ordering::Relaxed);
        h.reset_every
            .store(s.reset_every.unwrap_or(0), Ordering::Relaxed);
        h.stall_every
            .store(s.stall_every.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn hook_stats(&self) -> HookStats {
        HookStats {
            resets: self.hooks.resets.load(Ordering::Relaxed),
            stalls: self.hooks.stalls.load(Ordering::Relaxed),
        }
    }

    /// After an engine step (no DMA in progress): fires what the schedule
    /// says is due. `last_queue`: the queue that received last.
    pub(crate) fn run_fault_schedule(&self, last_queue: u32) {
        let h = &self.hooks;
        let bytes = self.rx_bytes();
        let due = |next: &AtomicU64, every: &AtomicU64| {
            let (n, e) = (next.load(Ordering::Relaxed), every.load(Ordering::Relaxed));
            if e == 0 || bytes < n {
                return false;
            }
            next.store(bytes - (bytes - n) % e + e, Ordering::Relaxed);
            true
        };
        if due(&h.next_stall, &h.stall_every) {
            self.stall_queue(last_queue);
        }
        if due(&h.next_reset, &h.reset_every) {
            self.inject_reset();
        }
    }
}
