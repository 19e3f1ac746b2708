//! The device-side worker: [`SimEngine`] owns the wire and does the NIC's
//! DMA work one `step()` at a time; [`SimThread`] runs it on its own thread.
//!
//! One step: complete a pending autonegotiation, take the IOMMU read guard
//! (once), snapshot the device-wide registers, transmit everything the
//! driver posted, then move up to `max_frames` frames from the wire into the
//! RX rings, and finally add the step's counters to the NIC. Nothing is
//! allocated and no mutex is taken per frame.

use crate::nic::SimNic;
use crate::rx::{RxOutcome, RxPath, RxSettings, RxWbHook, StepStats};
use crate::tx::TxPath;
use crate::{SimConfig, Wire};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Frames per step when running on a [`SimThread`].
const THREAD_BATCH: usize = 256;
/// Empty steps spent spinning before the thread starts yielding.
const IDLE_SPINS: u32 = 64;

impl SimNic {
    /// Creates the device and its engine. The NIC starts as after power-on:
    /// cable in, link up once `link_up_delay` has passed, registers at their
    /// reset values.
    pub fn new(cfg: SimConfig, wire: Box<dyn Wire>) -> (Arc<SimNic>, SimEngine) {
        let nic = Arc::new(SimNic::create(cfg, &wire.name()));
        let engine = SimEngine {
            seen_reset: nic.reset_gen.load(Ordering::Acquire),
            nic: Arc::clone(&nic),
            wire,
            rx: RxPath::new(),
            tx: TxPath::new(),
            pending: Vec::new(),
            has_pending: false,
        };
        (nic, engine)
    }
}

/// The NIC's DMA engine. Deterministic: the same register writes and wire
/// frames give the same memory contents and counters.
pub struct SimEngine {
    nic: Arc<SimNic>,
    wire: Box<dyn Wire>,
    rx: RxPath,
    tx: TxPath,
    /// A frame taken from the wire that found no room while flow control
    /// is on: retried first on the next step.
    pending: Vec<u8>,
    has_pending: bool,
    seen_reset: u64,
}

impl std::fmt::Debug for SimEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimEngine").field("wire", &self.wire.name()).field("has_pending", &self.has_pending).finish()
    }
}

impl SimEngine {
    /// Does pending TX work, then moves up to `max_frames` frames from the
    /// wire into RX rings. Returns the frames processed (RX frames taken off
    /// the wire, delivered or dropped, plus TX frames completed). A frame
    /// held back by flow control is not counted until it is delivered.
    pub fn step(&mut self, max_frames: usize) -> usize {
        let SimEngine { nic, wire, rx, tx, pending, has_pending, seen_reset } = self;
        let nic: &SimNic = nic;
        nic.poll_link();
        let gen = nic.reset_gen.load(Ordering::Acquire);
        if gen != *seen_reset {
            *seen_reset = gen;
            tx.reset();
        }
        let view = nic.iommu.view();
        let mut set = RxSettings::load(nic);
        let mut st = StepStats::default();
        rx.begin_step();

        let mut done = tx.run(nic, &view, &mut set, &mut st, &mut **wire, rx);

        let flow_control = nic.cfg.flow_control;
        let mut budget = max_frames;
        if *has_pending && budget > 0 {
            match rx.receive(nic, &view, &mut set, &mut st, pending.as_slice(), false) {
                RxOutcome::NoRoom if flow_control => budget = 0,
                outcome => {
                    if outcome == RxOutcome::NoRoom {
                        RxPath::count_missed(&mut st);
                    }
                    *has_pending = false;
                    budget -= 1;
                    done += 1;
                }
            }
        }
        while budget > 0 {
            let Some(frame) = wire.recv() else { break };
            match rx.receive(nic, &view, &mut set, &mut st, frame, false) {
                RxOutcome::NoRoom if flow_control => {
                    // PAUSE: the frame stays "on the wire" until there is room.
                    pending.clear();
                    pending.extend_from_slice(frame);
                    *has_pending = true;
                    break;
                }
                RxOutcome::NoRoom => RxPath::count_missed(&mut st),
                RxOutcome::Delivered | RxOutcome::Dropped => {}
            }
            budget -= 1;
            done += 1;
        }
        drop(view);
        nic.add_stats(&st.sim);
        nic.add_reg_stats(&st.regs);
        done
    }

    /// Installs (or removes) a hook that may rewrite every RX write-back
    /// just before it is stored: tests forge bad write-backs with it. The
    /// hook runs on the engine's thread while DMA is in progress: it must
    /// not access the NIC's registers or mappings.
    pub fn set_rx_wb_hook(&mut self, hook: Option<RxWbHook>) {
        self.rx.hook = hook;
    }

    pub fn wire_mut(&mut self) -> &mut dyn Wire {
        &mut *self.wire
    }

    pub fn nic(&self) -> &Arc<SimNic> {
        &self.nic
    }

    /// Whether a frame is held back by flow control.
    pub fn has_pending(&self) -> bool {
        self.has_pending
    }

    /// Runs the engine on its own thread until [`SimThread::stop`]: the
    /// concurrent mode, where descriptors and data cross cores as real DMA
    /// does.
    pub fn spawn(self) -> std::io::Result<SimThread> {
        self.spawn_with(|| {})
    }

    /// Like [`SimEngine::spawn`], running `init` on the new thread first
    /// (e.g. to pin it to a core).
    pub fn spawn_with(self, init: impl FnOnce() + Send + 'static) -> std::io::Result<SimThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new().name("hw-sim".into()).spawn(move || {
            init();
            let mut engine = self;
            let mut idle = 0u32;
            while !flag.load(Ordering::Relaxed) {
                if engine.step(THREAD_BATCH) > 0 {
                    idle = 0;
                } else if idle < IDLE_SPINS {
                    idle += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            engine
        })?;
        Ok(SimThread { stop, handle: Some(handle) })
    }
}

/// A [`SimEngine`] running on its own thread. Dropping it stops the thread.
#[derive(Debug)]
pub struct SimThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<SimEngine>>,
}

impl SimThread {
    /// Stops the loop, joins the thread and hands the engine back.
    pub fn stop(mut self) -> SimEngine {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("SimThread handle present until stop or drop");
        match handle.join() {
            Ok(engine) => engine,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
