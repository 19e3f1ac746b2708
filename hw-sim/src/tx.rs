//! Transmit path: advanced TX data descriptors in, frames out to the wire
//! (or back into the receive path with MAC loopback), following QEMU's
//! `igb_start_xmit` / `igb_process_tx_desc`.
//!
//! This module owns the per-queue gather state: a frame may span several
//! descriptors, and the driver may ring the doorbell before its EOP
//! descriptor is posted, so a partial frame waits here for the next step.

use crate::iommu::{DmaView, Hint};
use crate::nic::SimNic;
use crate::rx::{RxOutcome, RxPath, RxSettings, StepStats};
use crate::Wire;
use driver::desc::{DESC_LEN, TX_DTYP_DATA};
use driver::regs::*;

/// Largest frame the model gathers (16 KiB plus room for headers); longer
/// ones are dropped at EOP.
pub(crate) const MAX_TX_FRAME: usize = 16 * 1024 + 256;
/// QEMU's limit on buffers per frame (E1000E_MAX_TX_FRAGS).
const MAX_TX_FRAGS: usize = 64;
/// Context descriptor type: carries offload parameters, no data.
const TX_DTYP_CTXT: u32 = 2;

#[derive(Debug, Default)]
struct TxQueueState {
    /// The frame gathered so far.
    buf: Vec<u8>,
    frags: usize,
    /// Something went wrong with this frame: drop it at EOP.
    skip: bool,
}

impl TxQueueState {
    fn clear(&mut self) {
        self.buf.clear();
        self.frags = 0;
        self.skip = false;
    }
}

pub(crate) struct TxPath {
    queues: Vec<TxQueueState>,
}

impl TxPath {
    pub(crate) fn new() -> TxPath {
        TxPath {
            queues: (0..MAX_QUEUES).map(|_| TxQueueState::default()).collect(),
        }
    }

    /// CTRL.RST: forget partially gathered frames.
    pub(crate) fn reset(&mut self) {
        for q in self.queues.iter_mut() {
            q.clear();
        }
    }

    /// Processes every descriptor the driver has posted on every enabled
    /// queue. Returns the number of frames completed (sent, looped back or
    /// dropped at EOP).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &mut self,
        nic: &SimNic,
        view: &DmaView<'_>,
        set: &mut RxSettings,
        st: &mut StepStats,
        wire: &mut dyn Wire,
        rx: &mut RxPath,
    ) -> usize {
        if nic.load(TCTL) & TCTL_EN == 0 {
            return 0;
        }
        let loopback = set.rctl & RCTL_LBM_MAC != 0
            || nic.phy_loopback.load(std::sync::atomic::Ordering::Relaxed);
        let mut frames = 0;
        for q in 0..MAX_QUEUES {
            let b = tx_queue_base(q);
            if nic.load(b + Q_DCTL) & DCTL_QUEUE_ENABLE == 0 || set.stalled & (1 << q) != 0 {
                continue;
            }
            let ndesc = nic.load(b + Q_LEN) / DESC_LEN as u32;
            let tail = nic.load(b + Q_TAIL) & 0xFFFF;
            let mut head = nic.load(b + Q_HEAD) & 0xFFFF;
            // QEMU's igb_ring_empty: a tail outside the ring means nothing to do.
            if tail >= ndesc || head >= ndesc || head == tail {
                continue;
            }
            let base = nic.load(b + Q_BAL) as u64 | (nic.load(b + Q_BAH) as u64) << 32;
            let qs = &mut self.queues[q as usize];
            while head != tail {
                let desc_iova = base.wrapping_add(head as u64 * DESC_LEN as u64);
                match view.desc(desc_iova) {
                    // Unreadable descriptor: count the fault, skip it.
                    None => st.sim.dma_faults += 1,
                    Some(slot) => {
                        let (addr, cmd, _olinfo) = slot.read_tx();
                        let is_ctxt = cmd.dext() && cmd.dtyp() != TX_DTYP_DATA;
                        if !is_ctxt {
                            // Data descriptor (legacy ones are read the same way).
                            Self::gather(qs, view, st, addr, cmd.length() as usize);
                            if cmd.eop() {
                                frames += 1;
                                Self::transmit(
                                    nic,
                                    view,
                                    set,
                                    st,
                                    wire,
                                    rx,
                                    &mut qs.buf,
                                    qs.skip,
                                    loopback,
                                );
                                qs.clear();
                            }
                        } else if cmd.dtyp() != TX_DTYP_CTXT {
                            tracing::trace!(
                                queue = q,
                                dtyp = cmd.dtyp(),
                                "sim: unknown TX descriptor type"
                            );
                        }
                        if cmd.rs() {
                            slot.write_tx_done();
                        }
                    }
                }
                head = if head + 1 >= ndesc { 0 } else { head + 1 };
                nic.store(b + Q_HEAD, head);
            }
        }
        frames
    }

    fn gather(
        qs: &mut TxQueueState,
        view: &DmaView<'_>,
        st: &mut StepStats,
        addr: u64,
        len: usize,
    ) {
        if qs.skip || len == 0 {
            return;
        }
        qs.frags += 1;
        if qs.frags > MAX_TX_FRAGS || qs.buf.len() + len > MAX_TX_FRAME {
            qs.skip = true;
            return;
        }
        let Some(src) = view.translate(addr, len, Hint::Payload) else {
            st.sim.dma_faults += 1;
            qs.skip = true;
            return;
        };
        src.read_append(&mut qs.buf);
    }

    #[allow(clippy::too_many_arguments)]
    fn transmit(
        nic: &SimNic,
        view: &DmaView<'_>,
        set: &mut RxSettings,
        st: &mut StepStats,
        wire: &mut dyn Wire,
        rx: &mut RxPath,
        frame: &mut Vec<u8>,
        skip: bool,
        loopback: bool,
    ) {
        // QEMU's net_tx_pkt_parse needs at least an Ethernet header.
        if skip || frame.len() < crate::frames::ETH_HLEN {
            st.sim.tx_dropped += 1;
            return;
        }
        let len = frame.len() as u64;
        if loopback {
            st.sim.loopback_frames += 1;
            if rx.receive(nic, view, set, st, frame, true) == RxOutcome::NoRoom {
                // Our own transmitter cannot be paused: the frame is lost.
                RxPath::count_missed(st, 1);
            }
        } else if !set.link_up {
            st.sim.tx_dropped += 1;
            return;
        } else {
            // The wire may take the buffer (and leave another in its place).
            wire.send_vec(frame);
        }
        st.sim.tx_frames += 1;
        st.sim.tx_bytes += len;
        st.regs.gptc = st.regs.gptc.saturating_add(1);
        st.regs.gotc += len + 4;
    }
}
