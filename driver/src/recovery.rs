//! Device-reset recovery and the queue watchdog, for any number of queues.
//!
//! A device has one [`DeviceCtl`]: the [`Igb`] behind a mutex, the settings
//! a bring-up must restore (RSS, receive and transmit enables) and a
//! generation number that every bring-up bumps. Each queue's owner thread
//! keeps a [`QueueWatch`] and calls [`QueueWatch::check`] now and then
//! (rxsink: every 64 polling rounds). A check finds one of:
//!
//! - a **newer generation**: another queue brought the device up again, so
//!   this queue restarts its rings ([`RxRing::restart`], [`TxRing::restart`]);
//! - a **device reset** (the queue's enable bit reads back clear): the first
//!   queue to notice brings the device up again ([`Igb::reinit`], then RSS
//!   and the enables), under the mutex; the others find the new generation;
//! - a **stalled queue**: its head has not moved for
//!   [`WatchConfig::stall_timeout`] although the device has work on it (RX:
//!   free descriptors posted and frames dropped for this queue, RQDPC; TX:
//!   descriptors posted and not fetched). It is counted (`queue_stalls`)
//!   and recovered by resetting the device, as Linux drivers do for a TX
//!   hang.
//!
//! The watchdog's register reads (RDH, RQDPC, TDH) happen at most once per
//! [`WatchConfig::sample_every`], not on every check.

use crate::igb::{Igb, IgbError};
use crate::rss::RssConfig;
use crate::{BufPool, RxRing, TxRing};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the device must look like after a bring-up.
#[derive(Clone, Debug, Default)]
struct Restore {
    rss: Option<RssConfig>,
    rx: bool,
    tx: bool,
}

/// The device shared by its queues: bring-up, recovery and its counters.
pub struct DeviceCtl {
    igb: Mutex<(Igb, Restore)>,
    generation: AtomicU64,
    resets: AtomicU64,
    stalls: AtomicU64,
}

/// Device-wide recovery counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryStats {
    /// Times the device was brought up again (after it reset itself, or
    /// after the watchdog reset it).
    pub device_resets: u64,
    /// Queue stalls the watchdog detected (each one recovered by a reset).
    pub queue_stalls: u64,
}

impl DeviceCtl {
    pub fn new(igb: Igb) -> DeviceCtl {
        DeviceCtl {
            igb: Mutex::new((igb, Restore::default())),
            generation: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Igb, Restore)> {
        // A panic while holding the lock leaves the Igb usable: take it.
        self.igb.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the device (statistics, MAC, DMA space, ...).
    pub fn with<R>(&self, f: impl FnOnce(&mut Igb) -> R) -> R {
        f(&mut self.lock().0)
    }

    /// Turns RSS on (and restores it after every bring-up).
    pub fn enable_rss(&self, cfg: &RssConfig) -> Result<(), IgbError> {
        let mut g = self.lock();
        g.0.enable_rss_with(cfg)?;
        g.1.rss = Some(cfg.clone());
        Ok(())
    }

    /// Turns receive on (and again after every bring-up).
    pub fn enable_rx(&self) {
        let mut g = self.lock();
        g.0.enable_rx();
        g.1.rx = true;
    }

    /// Turns transmit on (and again after every bring-up).
    pub fn enable_tx(&self) {
        let mut g = self.lock();
        g.0.enable_tx();
        g.1.tx = true;
    }

    /// Stops receive and transmit for good: later checks bring nothing up.
    pub fn disable(&self) {
        let mut g = self.lock();
        g.0.disable();
        g.1 = Restore::default();
    }

    /// Bumped by every bring-up; a queue that saw an older one restarts.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> RecoveryStats {
        RecoveryStats {
            device_resets: self.resets.load(Ordering::Relaxed),
            queue_stalls: self.stalls.load(Ordering::Relaxed),
        }
    }

    /// Brings the device up again unless another queue already did since
    /// generation `seen`; returns the current generation. The device resets
    /// itself first (`Igb::reinit` writes CTRL.RST), so this also serves the
    /// watchdog.
    pub fn bring_up_again(&self, seen: u64) -> Result<u64, IgbError> {
        let mut g = self.lock();
        let now = self.generation();
        if now != seen {
            return Ok(now);
        }
        let (igb, restore) = &mut *g;
        igb.reinit()?;
        if let Some(rss) = &restore.rss {
            igb.enable_rss_with(rss)?;
        }
        if restore.rx {
            igb.enable_rx();
        }
        if restore.tx {
            igb.enable_tx();
        }
        self.resets.fetch_add(1, Ordering::Relaxed);
        self.generation.store(now + 1, Ordering::Release);
        Ok(now + 1)
    }
}

/// Watchdog settings.
#[derive(Clone, Copy, Debug)]
pub struct WatchConfig {
    /// A queue whose head has not moved for this long while the device has
    /// work on it is stalled.
    pub stall_timeout: Duration,
    /// Register samples (head, drop counter) at most this often.
    pub sample_every: Duration,
    /// Off: only device resets are noticed.
    pub watchdog: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            stall_timeout: Duration::from_millis(200),
            sample_every: Duration::from_millis(1),
            watchdog: true,
        }
    }
}

/// What a check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// The rings were restarted after the device came up again.
    Recovered(Cause),
    /// The device could not be brought up again.
    Failed(String),
}

/// Why a queue's rings were restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// This queue found the device reset and brought it up.
    DeviceReset,
    /// This queue's watchdog found it stalled and reset the device.
    Stall,
    /// Another queue brought the device up.
    Peer,
}

/// One queue's view of the device: the generation its rings belong to and
/// the watchdog's state.
pub struct QueueWatch {
    ctl: std::sync::Arc<DeviceCtl>,
    cfg: WatchConfig,
    generation: u64,
    next_sample: Option<Instant>,
    rx: Progress,
    tx: Progress,
    /// Ring restarts of this queue, by cause.
    pub restarts: u64,
    /// Stalls this queue's watchdog detected.
    pub stalls: u64,
}

/// A head register seen not moving since `since`.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    head: u32,
    since: Option<Instant>,
    /// Frames the device dropped for the queue since `since` (RX only).
    drops: u64,
}

impl Progress {
    /// Records a sample; true once the head has not moved for `timeout`
    /// while `busy` and (RX) with frames dropped meanwhile.
    fn stuck(
        &mut self,
        head: u32,
        busy: bool,
        drops: u32,
        needs_drops: bool,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        if !busy || head != self.head || self.since.is_none() {
            self.head = head;
            self.since = busy.then_some(now);
            self.drops = 0;
            return false;
        }
        self.drops += drops as u64;
        let long = self.since.is_some_and(|s| now.duration_since(s) >= timeout);
        long && (!needs_drops || self.drops > 0)
    }
}

impl QueueWatch {
    pub fn new(ctl: std::sync::Arc<DeviceCtl>, cfg: WatchConfig) -> QueueWatch {
        QueueWatch {
            generation: ctl.generation(),
            ctl,
            cfg,
            next_sample: None,
            rx: Progress::default(),
            tx: Progress::default(),
            restarts: 0,
            stalls: 0,
        }
    }

    /// Looks at the device once: restarts this queue's rings after a
    /// bring-up, brings the device up after a reset, resets it when the
    /// watchdog finds the queue stalled. `now` paces the watchdog.
    pub fn check<P: BufPool, H: BufPool, T: BufPool>(
        &mut self,
        rx: &mut RxRing<P, H>,
        mut tx: Option<&mut TxRing<T>>,
        now: Instant,
    ) -> Health {
        let gen = self.ctl.generation();
        if gen != self.generation {
            return self.restart(gen, rx, tx, Cause::Peer);
        }
        if rx.device_lost() {
            return match self.ctl.bring_up_again(self.generation) {
                Ok(g) => self.restart(g, rx, tx, Cause::DeviceReset),
                Err(e) => Health::Failed(e.to_string()),
            };
        }
        if !self.cfg.watchdog || self.next_sample.is_some_and(|t| now < t) {
            return Health::Ok;
        }
        self.next_sample = Some(now + self.cfg.sample_every);
        let timeout = self.cfg.stall_timeout;
        // RX: the device holds free descriptors (its head is not at our
        // tail) and dropped frames for this queue meanwhile.
        let head = rx.hw_head();
        let rx_busy = head as usize != rx.tail();
        let rx_stuck = self
            .rx
            .stuck(head, rx_busy, rx.hw_drops(), true, now, timeout);
        // TX: descriptors posted that the device has not fetched.
        let tx_stuck = match tx.as_deref_mut() {
            Some(t) => {
                let head = t.hw_head();
                let busy = head as usize != t.tail();
                self.tx.stuck(head, busy, 0, false, now, timeout)
            }
            None => false,
        };
        if !(rx_stuck || tx_stuck) {
            return Health::Ok;
        }
        self.stalls += 1;
        self.ctl.stalls.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            queue = rx.queue(),
            rx = rx_stuck,
            tx = tx_stuck,
            "queue stalled for {timeout:?}: resetting the device"
        );
        match self.ctl.bring_up_again(self.generation) {
            Ok(g) => self.restart(g, rx, tx, Cause::Stall),
            Err(e) => Health::Failed(e.to_string()),
        }
    }

    fn restart<P: BufPool, H: BufPool, T: BufPool>(
        &mut self,
        gen: u64,
        rx: &mut RxRing<P, H>,
        tx: Option<&mut TxRing<T>>,
        cause: Cause,
    ) -> Health {
        self.generation = gen;
        self.rx = Progress::default();
        self.tx = Progress::default();
        let r = rx
            .restart()
            .and_then(|()| tx.map_or(Ok(()), |t| t.restart()));
        match r {
            Ok(()) => {
                self.restarts += 1;
                Health::Recovered(cause)
            }
            Err(e) => Health::Failed(format!("queue {}: {e}", rx.queue())),
        }
    }
}
