//! The device as the driver sees it: BAR0 registers, the PHY behind MDIC,
//! link state, and the IOMMU. [`SimNic`] implements the driver's
//! [`driver::Device`] traits; the [`crate::SimEngine`] is its DMA engine.
//!
//! This module owns:
//! - the register file (one `AtomicU32` per dword of BAR0) and the side
//!   effects of register accesses: CTRL.RST, MDIC, clear-on-read statistics,
//!   address masks on ring registers;
//! - the PHY registers and the link state machine (carrier, autonegotiation
//!   restart, `link_up_delay`), evaluated lazily on STATUS/MDIC reads and at
//!   the start of every engine step;
//! - the cumulative [`SimStats`] counters.
//!
//! Register writes are stored with `Release` and their side effects applied
//! before `write32` returns; reads load with `Acquire`.

use crate::iommu::Iommu;
use crate::{SimConfig, SimStats};
use driver::regs::*;
use driver::DmaError;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Size of BAR0 in bytes.
pub const BAR0_LEN: u32 = 0x1_0000;

/// STATUS bits beyond LU that the model drives.
const STATUS_FD: u32 = 1 << 0;
const STATUS_SPEED_1000: u32 = 2 << 6;
const STATUS_PHYRA: u32 = 1 << 10;
/// Receive address entries 0..16: RAL(i) = 0x5400 + 8i, RAH(i) = RAL(i) + 4.
pub(crate) const NUM_RA: u32 = 16;

/// BMCR bits the PHY clears on write (reserved 5:0, self-clearing reset and
/// autoneg restart), and loopback.
const BMCR_RESET: u16 = 1 << 15;
pub(crate) const BMCR_LOOPBACK: u16 = 1 << 14;
/// BMSR capabilities: 10/100 half/full, extended status, preamble
/// suppression, autoneg ability, extended capabilities (QEMU's value
/// without the dynamic link / autoneg-complete bits).
const BMSR_CAPS: u16 = 0x7949;
/// PHY id of the IGP03 PHY QEMU reports.
const PHY_ID: u32 = 0x02A8_0390;
const PHY_REG_PHYID1: u32 = 2;
const PHY_REG_PHYID2: u32 = 3;

/// PHY registers and link state. Control path only: guarded by a mutex.
#[derive(Debug)]
struct Phy {
    regs: [u16; 32],
    /// Cable plugged in ([`SimNic::set_carrier`]).
    carrier: bool,
    /// BMSR.AN_COMPLETE.
    an_complete: bool,
    /// Autonegotiation in progress: the link comes up at this instant.
    deadline: Option<Instant>,
}

impl Phy {
    fn power_on() -> Phy {
        let mut regs = [0u16; 32];
        regs[PHY_BMCR as usize] = BMCR_AN_ENABLE | BMCR_FULL_DUPLEX | BMCR_SPEED_1000;
        regs[PHY_REG_PHYID1 as usize] = (PHY_ID >> 16) as u16;
        regs[PHY_REG_PHYID2 as usize] = (PHY_ID & 0xFFF0) as u16 | 1;
        regs[4] = 0x0DE1; // ANAR: 10/100 half/full, pause, asym pause
        regs[5] = 0x05E0; // ANLPAR
        regs[9] = 0x0F00; // 1000BASE-T control
        regs[10] = 0x3C00; // 1000BASE-T status
        regs[15] = 0x3000; // extended status: 1000BASE-T half/full
        Phy {
            regs,
            carrier: true,
            an_complete: false,
            deadline: None,
        }
    }
}

/// Cumulative counters behind [`SimNic::stats`].
#[derive(Debug, Default)]
struct Counters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    rx_missed: AtomicU64,
    gro_packets: AtomicU64,
    gro_segments: AtomicU64,
    rx_link_down: AtomicU64,
    rx_disabled: AtomicU64,
    rx_stalled: AtomicU64,
    rx_filtered: AtomicU64,
    rx_oversize: AtomicU64,
    dma_faults: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    loopback_frames: AtomicU64,
}

/// Statistics-register increments gathered during one engine step.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RegDelta {
    pub mpc: u32,
    pub roc: u32,
    pub gprc: u32,
    pub gorc: u64,
    pub gptc: u32,
    pub gotc: u64,
}

/// The simulated 82576: registers, PHY, IOMMU and counters. Shared between
/// the driver (through [`driver::Device`]) and the [`crate::SimEngine`].
pub struct SimNic {
    regs: Box<[AtomicU32]>,
    pub(crate) iommu: Iommu,
    phy: Mutex<Phy>,
    /// Fast check for the engine: an autonegotiation deadline is pending.
    autoneg_pending: AtomicBool,
    /// PHY loopback (BMCR bit 14) mirrored for the engine.
    pub(crate) phy_loopback: AtomicBool,
    /// Bumped by every CTRL.RST so the engine drops per-queue TX state.
    pub(crate) reset_gen: AtomicU64,
    pub(crate) hooks: crate::hooks::Hooks,
    /// Set by the engine after a step that found its wire exhausted and
    /// nothing held back (see [`SimNic::wire_drained`]).
    pub(crate) drained: AtomicBool,
    counters: Counters,
    pub(crate) cfg: SimConfig,
    name: String,
}

impl std::fmt::Debug for SimNic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNic")
            .field("name", &self.name)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Which ring register an offset names, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueReg {
    pub rx: bool,
    pub queue: u32,
    /// Offset inside the queue block (`Q_BAL`, `Q_TAIL`, ...).
    pub field: u32,
}

pub(crate) fn queue_reg(off: u32) -> Option<QueueReg> {
    let (rx, queue, field) = match off {
        0x2800..=0x2BFF => (true, (off - 0x2800) >> 8, off & 0xFF),
        0x3800..=0x3BFF => (false, (off - 0x3800) >> 8, off & 0xFF),
        0xC100..=0xC3FF => (true, (off - 0xC000) >> 6, off & 0x3F),
        0xE100..=0xE3FF => (false, (off - 0xE000) >> 6, off & 0x3F),
        _ => return None,
    };
    (field <= Q_DCTL).then_some(QueueReg { rx, queue, field })
}

fn is_stat_reg(off: u32) -> bool {
    matches!(off, MPC | ROC | GPRC | GORCL | GORCH | GPTC | GOTCL | GOTCH) || is_rqdpc(off)
}

/// RQDPC of some queue (clear on read).
fn is_rqdpc(off: u32) -> bool {
    (0xC000..0xC400).contains(&off) && off & 0x3F == 0x30
}

impl SimNic {
    pub(crate) fn create(cfg: SimConfig, wire_name: &str) -> SimNic {
        let regs: Box<[AtomicU32]> = (0..BAR0_LEN / 4).map(|_| AtomicU32::new(0)).collect();
        let nic = SimNic {
            regs,
            iommu: Iommu::default(),
            phy: Mutex::new(Phy::power_on()),
            autoneg_pending: AtomicBool::new(false),
            phy_loopback: AtomicBool::new(false),
            reset_gen: AtomicU64::new(0),
            hooks: Default::default(),
            drained: AtomicBool::new(false),
            counters: Counters::default(),
            name: format!("sim:{wire_name}"),
            cfg,
        };
        nic.load_defaults();
        // Power-on: the cable is in, so the PHY negotiates by itself, as
        // QEMU's model does when the NIC is created. Only a later CTRL.RST
        // leaves the link down until the driver restarts autonegotiation.
        {
            let mut phy = nic.lock_phy();
            nic.start_autoneg(&mut phy);
        }
        nic.poll_link();
        nic
    }

    #[inline]
    pub(crate) fn reg(&self, off: u32) -> &AtomicU32 {
        &self.regs[(off / 4) as usize % self.regs.len()]
    }

    /// Device-side register load (no read side effects).
    #[inline]
    pub(crate) fn load(&self, off: u32) -> u32 {
        self.reg(off).load(Ordering::Acquire)
    }

    /// Device-side register store (no write side effects).
    #[inline]
    pub(crate) fn store(&self, off: u32, v: u32) {
        self.reg(off).store(v, Ordering::Release)
    }

    fn lock_phy(&self) -> std::sync::MutexGuard<'_, Phy> {
        self.phy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register defaults after power-on and CTRL.RST (QEMU's igb reset
    /// values for the registers we model), all queues disabled.
    fn load_defaults(&self) {
        for r in self.regs.iter() {
            r.store(0, Ordering::Relaxed);
        }
        // FD | LRST | SPD_1000 | ADVD3WUC
        self.store(CTRL, (1 << 0) | (1 << 3) | (2 << 8) | (1 << 20));
        self.store(STATUS, STATUS_PHYRA | (1 << 31));
        self.store(
            TCTL,
            TCTL_PSP | (0xF << 4) | (0x40 << 12) | (1 << 26) | (0xA << 28),
        );
        self.store(RXCSUM, RXCSUM_IPOFLD | RXCSUM_TUOFLD);
        self.store(RLPML, 0x2600);
        for q in 0..MAX_QUEUES {
            self.store(rx_queue_base(q) + Q_DCTL, 1 << 16);
        }
        let m = self.cfg.mac;
        self.store(RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.store(RAH0, u32::from_le_bytes([m[4], m[5], 0, 0]) | RAH_AV);
    }

    /// CTRL.RST: every register back to its default, queues off, link down
    /// until autonegotiation is restarted. Waits for the engine's current
    /// step so a reset never lands in the middle of a DMA.
    pub(crate) fn reset_device(&self) {
        let _quiet = self.iommu.quiesce();
        self.hooks.stalled.store(0, Ordering::Release);
        self.load_defaults();
        let mut phy = self.lock_phy();
        let carrier = phy.carrier;
        *phy = Phy::power_on();
        phy.carrier = carrier;
        self.autoneg_pending.store(false, Ordering::Release);
        self.phy_loopback.store(false, Ordering::Relaxed);
        self.link_down(&mut phy);
        self.reset_gen.fetch_add(1, Ordering::AcqRel);
        tracing::debug!("sim: CTRL.RST");
    }

    fn link_down(&self, phy: &mut Phy) {
        phy.an_complete = false;
        self.reg(STATUS).fetch_and(
            !(STATUS_LU | STATUS_FD | STATUS_SPEED_1000),
            Ordering::AcqRel,
        );
    }

    fn link_up(&self, phy: &mut Phy) {
        phy.an_complete = phy.regs[PHY_BMCR as usize] & BMCR_AN_ENABLE != 0;
        self.reg(STATUS)
            .fetch_or(STATUS_LU | STATUS_FD | STATUS_SPEED_1000, Ordering::AcqRel);
    }

    /// (Re)starts autonegotiation: link down now, up `link_up_delay` later
    /// if the carrier is still there then.
    fn start_autoneg(&self, phy: &mut Phy) {
        self.link_down(phy);
        phy.deadline = Some(Instant::now() + self.cfg.link_up_delay);
        self.autoneg_pending.store(true, Ordering::Release);
    }

    /// Completes a pending autonegotiation whose time has come. Cheap when
    /// nothing is pending (one atomic load).
    pub(crate) fn poll_link(&self) {
        if !self.autoneg_pending.load(Ordering::Acquire) {
            return;
        }
        let mut phy = self.lock_phy();
        let Some(deadline) = phy.deadline else { return };
        if Instant::now() < deadline {
            return;
        }
        phy.deadline = None;
        self.autoneg_pending.store(false, Ordering::Release);
        if phy.carrier {
            self.link_up(&mut phy);
            tracing::debug!("sim: link up");
        }
    }

    /// Link as the data path sees it (STATUS.LU).
    #[inline]
    pub(crate) fn link_is_up(&self) -> bool {
        self.load(STATUS) & STATUS_LU != 0
    }

    fn phy_read(&self, phy: &Phy, reg: u32) -> u16 {
        match reg {
            PHY_BMSR => {
                let mut v = BMSR_CAPS;
                if self.link_is_up() {
                    v |= BMSR_LINK;
                }
                if phy.an_complete {
                    v |= BMSR_AN_COMPLETE;
                }
                v
            }
            r => phy.regs[r as usize & 31],
        }
    }

    /// Returns false when the register is read-only (MDIC_ERROR).
    fn phy_write(&self, phy: &mut Phy, reg: u32, data: u16) -> bool {
        match reg {
            PHY_BMSR | PHY_REG_PHYID1 | PHY_REG_PHYID2 => false,
            PHY_BMCR => {
                let v = data & !(0x3F | BMCR_RESET | BMCR_AN_RESTART);
                phy.regs[PHY_BMCR as usize] = v;
                self.phy_loopback
                    .store(v & BMCR_LOOPBACK != 0, Ordering::Relaxed);
                if data & BMCR_AN_RESTART != 0 && v & BMCR_AN_ENABLE != 0 {
                    self.start_autoneg(phy);
                }
                true
            }
            r => {
                phy.regs[r as usize & 31] = data;
                true
            }
        }
    }

    /// MDIC write: one PHY access, completed synchronously (READY set).
    fn mdic(&self, v: u32) {
        let reg = (v >> MDIC_REG_SHIFT) & 0x1F;
        let phy_addr = (v >> MDIC_PHY_SHIFT) & 0x1F;
        let mut phy = self.lock_phy();
        let out = if phy_addr != PHY_ADDR {
            self.load(MDIC) | MDIC_ERROR
        } else if v & MDIC_OP_READ != 0 {
            drop(phy);
            self.poll_link();
            phy = self.lock_phy();
            (v & !MDIC_DATA_MASK & !MDIC_ERROR) | self.phy_read(&phy, reg) as u32
        } else if v & MDIC_OP_WRITE != 0 {
            let ok = self.phy_write(&mut phy, reg, (v & MDIC_DATA_MASK) as u16);
            let v = v & !MDIC_ERROR;
            if ok {
                v
            } else {
                v | MDIC_ERROR
            }
        } else {
            v & !MDIC_ERROR
        };
        self.store(MDIC, out | MDIC_READY);
    }

    /// Queue disable waits for the engine's current step, as real hardware
    /// clears the enable bit only once the queue has stopped: after the
    /// driver sees it clear, the engine no longer touches that ring.
    fn write_queue_reg(&self, off: u32, qr: QueueReg, v: u32) {
        let v = match qr.field {
            Q_BAL => v & !0x7F,
            Q_LEN => v & 0xF_FF80,
            Q_HEAD | Q_TAIL => v & 0xFFFF,
            _ => v,
        };
        if qr.field == Q_DCTL
            && v & DCTL_QUEUE_ENABLE == 0
            && self.load(off) & DCTL_QUEUE_ENABLE != 0
        {
            let _quiet = self.iommu.quiesce();
            self.store(off, v);
            return;
        }
        self.store(off, v);
    }

    /// Adds one step's statistics-register increments (saturating, as the
    /// hardware counters stick at their maximum).
    /// Frames queue `q` dropped (RQDPC, saturating).
    pub(crate) fn add_rqdpc(&self, q: u32, n: u32) {
        let _ = self.reg(driver::regs::rqdpc(q)).fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |x| Some(x.saturating_add(n)),
        );
    }

    pub(crate) fn add_reg_stats(&self, d: &RegDelta) {
        let sat_add = |off: u32, n: u32| {
            if n != 0 {
                let _ = self
                    .reg(off)
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
                        Some(x.saturating_add(n))
                    });
            }
        };
        sat_add(MPC, d.mpc);
        sat_add(ROC, d.roc);
        sat_add(GPRC, d.gprc);
        sat_add(GPTC, d.gptc);
        self.add64(GORCL, GORCH, d.gorc);
        self.add64(GOTCL, GOTCH, d.gotc);
    }

    fn add64(&self, lo: u32, hi: u32, n: u64) {
        if n == 0 {
            return;
        }
        let old = self.reg(lo).fetch_add(n as u32, Ordering::AcqRel);
        let carry = (old as u64 + (n & 0xFFFF_FFFF)) >> 32;
        let add_hi = (n >> 32) + carry;
        if add_hi != 0 {
            self.reg(hi).fetch_add(add_hi as u32, Ordering::AcqRel);
        }
    }

    pub(crate) fn add_stats(&self, d: &SimStats) {
        let c = &self.counters;
        let pairs: [(&AtomicU64, u64); 15] = [
            (&c.rx_frames, d.rx_frames),
            (&c.rx_bytes, d.rx_bytes),
            (&c.rx_missed, d.rx_missed),
            (&c.gro_packets, d.gro_packets),
            (&c.gro_segments, d.gro_segments),
            (&c.rx_link_down, d.rx_link_down),
            (&c.rx_disabled, d.rx_disabled),
            (&c.rx_stalled, d.rx_stalled),
            (&c.rx_filtered, d.rx_filtered),
            (&c.rx_oversize, d.rx_oversize),
            (&c.dma_faults, d.dma_faults),
            (&c.tx_frames, d.tx_frames),
            (&c.tx_bytes, d.tx_bytes),
            (&c.tx_dropped, d.tx_dropped),
            (&c.loopback_frames, d.loopback_frames),
        ];
        for (a, n) in pairs {
            if n != 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Whether the engine's wire is exhausted (a replayed file at its end,
    /// see [`crate::Wire::exhausted`]) and every frame it delivered has
    /// been placed in an RX ring or dropped and counted, as of the engine's
    /// last step. A receiver that sees `true` and then polls its ring empty
    /// has received everything the wire will ever bring.
    pub fn wire_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Bytes received so far (`SimStats::rx_bytes`), without a snapshot of
    /// every counter: the fault schedule reads it after each engine step.
    pub(crate) fn rx_bytes(&self) -> u64 {
        self.counters.rx_bytes.load(Ordering::Relaxed)
    }

    /// Cumulative counters since creation. Independent of the clear-on-read
    /// statistics registers.
    pub fn stats(&self) -> SimStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SimStats {
            rx_frames: l(&c.rx_frames),
            rx_bytes: l(&c.rx_bytes),
            rx_missed: l(&c.rx_missed),
            gro_packets: l(&c.gro_packets),
            gro_segments: l(&c.gro_segments),
            rx_link_down: l(&c.rx_link_down),
            rx_disabled: l(&c.rx_disabled),
            rx_stalled: l(&c.rx_stalled),
            rx_filtered: l(&c.rx_filtered),
            rx_oversize: l(&c.rx_oversize),
            dma_faults: l(&c.dma_faults),
            tx_frames: l(&c.tx_frames),
            tx_bytes: l(&c.tx_bytes),
            tx_dropped: l(&c.tx_dropped),
            loopback_frames: l(&c.loopback_frames),
        }
    }

    /// Plugs (`true`) or unplugs the cable. Unplugging takes the link down at
    /// once; plugging it back restarts autonegotiation (link up
    /// `link_up_delay` later) when BMCR.AN_ENABLE is set, else the link
    /// comes straight up.
    pub fn set_carrier(&self, up: bool) {
        let mut phy = self.lock_phy();
        if phy.carrier == up {
            return;
        }
        phy.carrier = up;
        if !up {
            phy.deadline = None;
            self.autoneg_pending.store(false, Ordering::Release);
            self.link_down(&mut phy);
        } else if phy.regs[PHY_BMCR as usize] & BMCR_AN_ENABLE != 0 && !phy.an_complete {
            self.start_autoneg(&mut phy);
        } else {
            self.link_up(&mut phy);
        }
    }

    /// Whether the cable is plugged in.
    pub fn carrier(&self) -> bool {
        self.lock_phy().carrier
    }

    /// Number of live DMA mappings (leak checks in tests).
    pub fn dma_mappings(&self) -> usize {
        self.iommu.len()
    }
}

impl driver::RegisterIo for SimNic {
    fn read32(&self, offset: u32) -> u32 {
        if offset & 3 != 0 || offset >= BAR0_LEN {
            return 0;
        }
        match offset {
            STATUS => {
                self.poll_link();
                self.load(STATUS)
            }
            MPC | ROC | GPRC | GPTC | GORCL | GOTCL => self.reg(offset).swap(0, Ordering::AcqRel),
            // Reading the high half clears the whole 64-bit counter.
            GORCH | GOTCH => {
                let v = self.reg(offset).swap(0, Ordering::AcqRel);
                self.reg(offset - 4).store(0, Ordering::Release);
                v
            }
            o if is_rqdpc(o) => self.reg(o).swap(0, Ordering::AcqRel),
            _ => self.load(offset),
        }
    }

    fn write32(&self, offset: u32, value: u32) {
        if offset & 3 != 0 || offset >= BAR0_LEN {
            return;
        }
        match offset {
            CTRL => {
                if value & CTRL_RST != 0 {
                    self.reset_device();
                } else {
                    self.store(CTRL, value);
                }
            }
            // Read-only except that software may clear PHYRA.
            STATUS => {
                if value & STATUS_PHYRA == 0 {
                    self.reg(STATUS).fetch_and(!STATUS_PHYRA, Ordering::AcqRel);
                }
            }
            MDIC => self.mdic(value),
            o if is_stat_reg(o) => {}
            o => match queue_reg(o) {
                Some(qr) => self.write_queue_reg(o, qr, value),
                None => self.store(o, value),
            },
        }
    }
}

impl driver::DmaMapper for SimNic {
    unsafe fn map(&self, iova: u64, host: *mut u8, len: usize) -> Result<(), DmaError> {
        self.iommu.map(iova, host, len)
    }

    fn unmap(&self, iova: u64, len: usize) -> Result<(), DmaError> {
        self.iommu.unmap(iova, len)
    }
}

impl driver::Device for SimNic {
    fn name(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NullWire;
    use driver::RegisterIo;
    use std::time::Duration;

    fn nic(delay: Duration) -> std::sync::Arc<SimNic> {
        let cfg = SimConfig {
            link_up_delay: delay,
            ..SimConfig::default()
        };
        crate::SimNic::new(cfg, Box::new(NullWire)).0
    }

    fn mdic_write(n: &SimNic, reg: u32, data: u16) -> u32 {
        n.write32(
            MDIC,
            data as u32 | reg << MDIC_REG_SHIFT | PHY_ADDR << MDIC_PHY_SHIFT | MDIC_OP_WRITE,
        );
        n.read32(MDIC)
    }

    fn mdic_read(n: &SimNic, reg: u32) -> u32 {
        n.write32(
            MDIC,
            reg << MDIC_REG_SHIFT | PHY_ADDR << MDIC_PHY_SHIFT | MDIC_OP_READ,
        );
        n.read32(MDIC)
    }

    #[test]
    fn power_on_link_up_and_mac_in_ral() {
        let n = nic(Duration::ZERO);
        assert_ne!(n.read32(STATUS) & STATUS_LU, 0);
        assert_eq!(n.read32(RAL0), 0x0000_0002);
        assert_eq!(n.read32(RAH0), 0x0100 | RAH_AV);
    }

    #[test]
    fn reset_drops_link_until_autoneg_restart() {
        let n = nic(Duration::from_millis(20));
        n.write32(rx_queue_base(0) + Q_DCTL, DCTL_QUEUE_ENABLE);
        n.write32(CTRL, n.read32(CTRL) | CTRL_RST);
        assert_eq!(n.read32(CTRL) & CTRL_RST, 0);
        assert_eq!(n.read32(STATUS) & STATUS_LU, 0);
        assert_eq!(n.read32(rx_queue_base(0) + Q_DCTL) & DCTL_QUEUE_ENABLE, 0);
        let bmsr = mdic_read(&n, PHY_BMSR);
        assert_ne!(bmsr & MDIC_READY, 0);
        assert_eq!(bmsr as u16 & (BMSR_LINK | BMSR_AN_COMPLETE), 0);
        assert_eq!(
            mdic_read(&n, PHY_BMCR) as u16,
            BMCR_AN_ENABLE | BMCR_FULL_DUPLEX | BMCR_SPEED_1000
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            n.read32(STATUS) & STATUS_LU,
            0,
            "no autoneg restart, no link"
        );

        let r = mdic_write(
            &n,
            PHY_BMCR,
            BMCR_AN_ENABLE | BMCR_AN_RESTART | BMCR_FULL_DUPLEX | BMCR_SPEED_1000,
        );
        assert_eq!(r & (MDIC_READY | MDIC_ERROR), MDIC_READY);
        assert_eq!(n.read32(STATUS) & STATUS_LU, 0, "not before link_up_delay");
        let start = Instant::now();
        while n.read32(STATUS) & STATUS_LU == 0 && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_ne!(n.read32(STATUS) & STATUS_LU, 0);
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert_eq!(
            mdic_read(&n, PHY_BMSR) as u16 & (BMSR_LINK | BMSR_AN_COMPLETE),
            BMSR_LINK | BMSR_AN_COMPLETE
        );
        // AN_RESTART self-clears.
        assert_eq!(mdic_read(&n, PHY_BMCR) as u16 & BMCR_AN_RESTART, 0);
    }

    #[test]
    fn mdic_bad_phy_address_and_read_only_registers() {
        let n = nic(Duration::ZERO);
        n.write32(MDIC, 2 << MDIC_PHY_SHIFT | MDIC_OP_READ);
        assert_eq!(
            n.read32(MDIC) & (MDIC_READY | MDIC_ERROR),
            MDIC_READY | MDIC_ERROR
        );
        assert_ne!(mdic_write(&n, PHY_BMSR, 0) & MDIC_ERROR, 0);
        assert_eq!(mdic_read(&n, 2) as u16, 0x02A8);
        assert_eq!(mdic_read(&n, 2) & MDIC_ERROR, 0);
    }

    #[test]
    fn carrier_flap_renegotiates() {
        let n = nic(Duration::ZERO);
        n.set_carrier(false);
        assert_eq!(n.read32(STATUS) & STATUS_LU, 0);
        // Autoneg while unplugged does not bring the link up.
        mdic_write(&n, PHY_BMCR, BMCR_AN_ENABLE | BMCR_AN_RESTART);
        assert_eq!(n.read32(STATUS) & STATUS_LU, 0);
        n.set_carrier(true);
        assert_ne!(n.read32(STATUS) & STATUS_LU, 0);
    }

    #[test]
    fn ring_registers_masked_and_stats_clear_on_read() {
        let n = nic(Duration::ZERO);
        let b = rx_queue_base(5);
        n.write32(b + Q_BAL, 0x1234_56FF);
        n.write32(b + Q_LEN, 0xFFFF_FFFF);
        n.write32(b + Q_TAIL, 0x1_0005);
        assert_eq!(n.read32(b + Q_BAL), 0x1234_5680);
        assert_eq!(n.read32(b + Q_LEN), 0xF_FF80);
        assert_eq!(n.read32(b + Q_TAIL), 5);
        assert_eq!(
            queue_reg(tx_queue_base(15) + Q_DCTL),
            Some(QueueReg {
                rx: false,
                queue: 15,
                field: Q_DCTL
            })
        );
        assert_eq!(
            queue_reg(rx_queue_base(3) + Q_SRRCTL),
            Some(QueueReg {
                rx: true,
                queue: 3,
                field: Q_SRRCTL
            })
        );

        n.add_reg_stats(&RegDelta {
            gprc: 3,
            gorc: 0x1_0000_0010,
            mpc: 1,
            ..RegDelta::default()
        });
        n.add_reg_stats(&RegDelta {
            gorc: 0xFFFF_FFF0,
            ..RegDelta::default()
        });
        n.write32(GPRC, 100); // read-only
        assert_eq!(n.read32(GPRC), 3);
        assert_eq!(n.read32(GPRC), 0);
        assert_eq!(n.read32(GORCL), 0);
        assert_eq!(n.read32(GORCH), 2);
        assert_eq!(n.read32(GORCH), 0);
        assert_eq!(n.read32(MPC), 1);
        // Out of range and unaligned accesses are ignored.
        n.write32(0x1_0000, 1);
        n.write32(0x2, 1);
        assert_eq!(n.read32(0x1_0000), 0);
    }
}
