//! The device-side worker: [`SimEngine`] owns the wire and does the NIC's
//! DMA work one `step()` at a time; [`SimThread`] runs it on its own thread.
//!
//! One step: complete a pending autonegotiation, take the IOMMU read guard
//! (once), snapshot the device-wide registers, transmit everything the
//! driver posted, then move up to `max_frames` frames from the wire into the
//! RX rings, and finally add the step's counters to the NIC. Nothing is
//! allocated and no mutex is taken per frame.
//!
//! With `SimConfig::gro` > 1, frames from the wire pass through a
//! coalescing context ([`Gro`]): a coalescible TCP segment opens a run
//! (copied into the context's staging buffer), following frames extend it
//! while they match, and the run is placed as one packet when it is full,
//! when a frame does not match (that frame then starts the next run or is
//! received normally), when the wire is empty, and at the end of the step.
//!
//! Flow control: a frame, or a closed coalesced packet, that finds no room
//! waits (in `pending`, respectively in the [`Gro`] context) and is retried
//! first on the next step, packet before frame, so the wire order holds.

use crate::frames;
use crate::gro::Gro;
use crate::iommu::DmaView;
use crate::nic::SimNic;
use crate::rx::{padded, steer, RxOutcome, RxPath, RxSettings, RxWbHook, Steered, StepStats};
use crate::tx::TxPath;
use crate::{gro, SimConfig, Wire};
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
    ///
    /// It cannot fail: a `cfg.gro` outside 1..=64 is clamped into it (check
    /// with [`SimConfig::validate`] first to report it instead).
    pub fn new(mut cfg: SimConfig, wire: Box<dyn Wire>) -> (Arc<SimNic>, SimEngine) {
        cfg.gro = cfg.gro.clamp(1, gro::MAX_GRO);
        let gro = Gro::new(cfg.gro);
        let nic = Arc::new(SimNic::create(cfg, &wire.name()));
        let engine = SimEngine {
            gro,
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
    /// The coalescing context (idle when `gro` is 1).
    gro: Gro,
    /// A frame taken from the wire that found no room while flow control
    /// is on: retried first on the next step.
    pending: Vec<u8>,
    has_pending: bool,
    seen_reset: u64,
}

impl std::fmt::Debug for SimEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimEngine")
            .field("wire", &self.wire.name())
            .field("has_pending", &self.has_pending)
            .field("gro_held", &self.gro.is_closed())
            .finish()
    }
}

impl SimEngine {
    /// Does pending TX work, then moves up to `max_frames` frames from the
    /// wire into RX rings. Returns the frames processed (RX frames taken off
    /// the wire, delivered, coalesced or dropped, plus TX frames completed).
    /// A frame held back by flow control is not counted until it is
    /// delivered; a segment counts when it joins a coalesced packet.
    pub fn step(&mut self, max_frames: usize) -> usize {
        let SimEngine {
            nic,
            wire,
            rx,
            tx,
            gro,
            pending,
            has_pending,
            seen_reset,
        } = self;
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

        let mut cx = RxCtx {
            nic,
            view: &view,
            set: &mut set,
            st: &mut st,
            rx,
            gro,
            fc: nic.cfg.flow_control,
        };
        let mut budget = max_frames;
        // Held work first, in wire order: a coalesced packet, then a frame.
        let mut stalled = budget == 0 || (cx.gro.is_closed() && !cx.place_closed());
        if !stalled && *has_pending {
            match cx.feed(pending.as_slice()) {
                Fed::Stalled => stalled = true,
                fed => {
                    *has_pending = false;
                    budget -= 1;
                    done += 1;
                    stalled = fed == Fed::DoneStalled;
                }
            }
        }
        while !stalled && budget > 0 {
            let Some(frame) = wire.recv() else { break };
            match cx.feed(frame) {
                Fed::Done => {}
                Fed::DoneStalled => stalled = true,
                Fed::Stalled => {
                    // PAUSE: the frame stays "on the wire" until there is room.
                    pending.clear();
                    pending.extend_from_slice(frame);
                    *has_pending = true;
                    break;
                }
            }
            budget -= 1;
            done += 1;
        }
        // Runs never outlive the step (RSC's timer); a packet without room
        // stays closed in the context.
        if cx.gro.is_open() {
            cx.flush();
        }
        drop(view);
        nic.add_stats(&st.sim);
        nic.add_reg_stats(&st.regs);
        if nic.hooks.scheduled() {
            nic.run_fault_schedule(rx.last_queue);
        }
        // Everything taken from the wire has been placed in a ring or
        // dropped (and counted), and the wire has nothing more. Release:
        // whoever sees the flag sees the descriptors written before it.
        let drained = wire.exhausted() && !*has_pending && !gro.is_closed() && !gro.is_open();
        if drained != nic.drained.load(Ordering::Relaxed) {
            nic.drained.store(drained, Ordering::Release);
        }
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

    /// Whether the wire is exhausted ([`Wire::exhausted`]) and every frame
    /// taken from it was placed in a ring or dropped; the same as
    /// [`SimNic::wire_drained`] after this engine's last step.
    pub fn drained(&self) -> bool {
        self.nic.wire_drained()
    }

    /// Whether a frame or a coalesced packet is held back by flow control.
    pub fn has_pending(&self) -> bool {
        self.has_pending || self.gro.is_closed()
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
        let handle = std::thread::Builder::new()
            .name("hw-sim".into())
            .spawn(move || {
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
        Ok(SimThread {
            stop,
            handle: Some(handle),
        })
    }
}

/// What became of a frame offered to the receive path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fed {
    /// Taken: delivered, dropped, or added to the open run.
    Done,
    /// Taken, but it completed a run that found no room: the packet waits
    /// in the context (flow control) and the step stops.
    DoneStalled,
    /// Not taken: no room for it, or for the run it closed (flow control).
    /// The caller keeps the frame.
    Stalled,
}

/// The receive side of one step: what every frame needs.
struct RxCtx<'a, 'v> {
    nic: &'a SimNic,
    view: &'a DmaView<'v>,
    set: &'a mut RxSettings,
    st: &'a mut StepStats,
    rx: &'a mut RxPath,
    gro: &'a mut Gro,
    /// Flow control on: no room means wait, not drop.
    fc: bool,
}

impl RxCtx<'_, '_> {
    /// Runs one frame from the wire through the MAC checks and the
    /// coalescing context into a ring. The frame is parsed and steered
    /// once, whatever becomes of it.
    #[inline]
    fn feed(&mut self, frame: &[u8]) -> Fed {
        if !RxPath::accept(self.nic, self.set, self.st, frame, false) {
            return Fed::Done;
        }
        if frame.len() < frames::ETH_ZLEN {
            return self.take(&padded(frame));
        }
        self.take(frame)
    }

    /// [`Self::feed`] for an accepted frame of at least the minimum length.
    #[inline]
    fn take(&mut self, frame: &[u8]) -> Fed {
        if !self.gro.enabled() {
            // Parsed and steered where it is placed.
            return self.deliver(frame, None);
        }
        let p = frames::parse(frame);
        // Checked and checksummed once, whether it extends or starts a run.
        let seg = gro::segment(frame, &p);
        if self.gro.is_open() {
            if let Some(s) = &seg {
                if self.gro.append_seg(frame, s).is_ok() {
                    if self.gro.is_full() && !self.flush() {
                        return Fed::DoneStalled;
                    }
                    return Fed::Done;
                }
            }
            if !self.flush() {
                return Fed::Stalled;
            }
        }
        let (queue, rss) = steer(self.nic, self.set, frame, &p);
        let steered = Steered {
            parsed: p,
            queue,
            rss,
        };
        if let Some(seg) = seg {
            let cap = self.rx.ring_capacity(self.nic, self.set, queue);
            if self.gro.start_seg(frame, &seg, cap, steered) {
                return Fed::Done;
            }
        }
        self.deliver(frame, Some(&steered))
    }

    fn deliver(&mut self, frame: &[u8], steered: Option<&Steered>) -> Fed {
        match self
            .rx
            .deliver(self.nic, self.view, self.set, self.st, frame, steered, None)
        {
            RxOutcome::NoRoom if self.fc => Fed::Stalled,
            RxOutcome::NoRoom => {
                RxPath::count_missed(self.st, 1);
                Fed::Done
            }
            RxOutcome::Delivered | RxOutcome::Dropped => Fed::Done,
        }
    }

    /// Closes the open run and places it. `false` when it found no room and
    /// waits (flow control).
    fn flush(&mut self) -> bool {
        if self.gro.close().is_none() {
            return true;
        }
        self.place_closed()
    }

    /// Places the closed packet; `false` when it must wait for room.
    fn place_closed(&mut self) -> bool {
        let Some((packet, info)) = self.gro.packet() else {
            return true;
        };
        let segs = info.segs();
        // A run of one segment shorter than a minimum frame (its Ethernet
        // padding is not part of the run) is padded again.
        let pad;
        let packet = if packet.len() < frames::ETH_ZLEN {
            pad = padded(packet);
            &pad
        } else {
            packet
        };
        let outcome = self.rx.deliver(
            self.nic,
            self.view,
            self.set,
            self.st,
            packet,
            Some(info.steered),
            Some(&info),
        );
        match outcome {
            RxOutcome::NoRoom if self.fc => return false,
            RxOutcome::NoRoom => RxPath::count_missed(self.st, segs),
            RxOutcome::Delivered | RxOutcome::Dropped => {}
        }
        self.gro.clear();
        true
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
        let handle = self
            .handle
            .take()
            .expect("SimThread handle present until stop or drop");
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
