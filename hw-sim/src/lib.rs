//! A behavioural model of the Intel 82576 (igb) NIC, driven only through
//! registers and descriptors, matching QEMU 10's igb model where the
//! driver can tell (see `shared/igb-notes.md`).
//!
//! The driver's ring code runs unchanged on it: [`SimNic`] implements
//! [`driver::Device`] (32-bit BAR0 registers plus an IOMMU), and the
//! [`SimEngine`] plays the NIC's DMA engine, moving frames between a
//! [`Wire`] and the rings in host memory. Run the engine inline with
//! [`SimEngine::step`] (deterministic tests) or on a thread with
//! [`SimEngine::spawn`] (benchmarks).
//!
//! - [`nic`]: registers, PHY and link, statistics, the `Device` impl.
//! - `iommu`: the IOVA mapping table; all DMA (and all `unsafe` but the TAP
//!   wire's system calls) goes through it.
//! - `rx` / `tx`: the receive path (filters, queue choice, header split,
//!   write-back) and the transmit path (gather, loopback).
//! - `rss`: receive side scaling (MRQC, RSSRK, RETA; Toeplitz hash).
//! - [`gro`]: receive side coalescing of TCP segments (`SimConfig::gro`).
//! - [`engine`]: `SimEngine::step` and the engine thread.
//! - [`wire`]: the [`Wire`] trait and the generator / test / null / TAP wires.
//! - [`frames`]: frame builders, parser and checksums.
//! - [`hooks`]: faults the model injects on itself (device reset, stalled
//!   queue), for testing recovery.
//!
//! Where the model knowingly differs from QEMU 10:
//! - MAC/PHY loopback frames are received even while the link is down
//!   (QEMU's `e1000x_hw_rx_enabled` drops them without STATUS.LU).
//! - CTRL.RST disables every queue (QEMU's reset leaves RX/TX queue 0 enabled).
//! - A buffer address of 0 is an ordinary unmapped IOVA, so a DMA fault
//!   (QEMU skips such descriptors).
//! - A frame that finds no room waits on the wire while
//!   `SimConfig::flow_control` is on (QEMU drops it).
//! - Receive side coalescing (`SimConfig::gro` > 1, off by default) is not
//!   an 82576 feature: it follows ixgbe's RSC, see [`gro`].
//! - RSS (see `rss`) follows QEMU except: RFCTL's IPv6 extension-header
//!   switches are not modelled (taken as 0, their reset value), and the
//!   IPv6 "EX" hash types hash the fixed header's addresses, never the
//!   Home Address option / type 2 routing header addresses QEMU substitutes.
//! - Legacy/replication descriptor types, VLAN stripping, VMDq (MRQC modes
//!   with bit 0 set: every frame to queue 0, no hash), the multicast hash
//!   table and interrupts are not modelled.
//!
//! ```
//! use hw_sim::{SimConfig, SimNic, wire::NullWire};
//! use driver::RegisterIo;
//! let (nic, mut engine) = SimNic::new(SimConfig::default(), Box::new(NullWire));
//! assert_ne!(nic.read32(driver::regs::STATUS) & driver::regs::STATUS_LU, 0);
//! assert_eq!(engine.step(32), 0);
//! ```

pub mod engine;
pub mod frames;
pub mod gro;
pub mod hooks;
mod iommu;
pub mod nic;
mod rss;
mod rx;
mod tx;
pub mod wire;

#[cfg(test)]
mod model_tests;

pub use engine::{SimEngine, SimThread};
pub use gro::Gro;
pub use hooks::{FaultSchedule, HookStats};
pub use nic::SimNic;
pub use rx::RxWbHook;
pub use wire::Wire;

use std::time::Duration;

/// How the simulated NIC is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Station address, loaded into RAL0/RAH0 at reset.
    pub mac: [u8; 6],
    /// After an autonegotiation restart the link comes up this long later
    /// (QEMU: about 0.5 s).
    pub link_up_delay: Duration,
    /// 802.3x PAUSE: a frame that finds no room in its ring stays on the
    /// wire until there is (a lossless wire). When false it is dropped and
    /// counted in MPC / `rx_missed`.
    pub flow_control: bool,
    /// Receive side coalescing: up to this many in-order TCP segments of a
    /// flow become one packet (see [`gro`]). 1 = off, at most
    /// [`gro::MAX_GRO`] (64). [`SimConfig::validate`] rejects other values;
    /// [`SimNic::new`] clamps them into 1..=64.
    pub gro: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            mac: [0x02, 0, 0, 0, 0, 0x01],
            link_up_delay: Duration::ZERO,
            flow_control: true,
            gro: 1,
        }
    }
}

/// An invalid [`SimConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimConfigError {
    /// `gro` must be 1..=64.
    Gro(u32),
}

impl std::fmt::Display for SimConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimConfigError::Gro(n) => {
                write!(f, "gro {n} invalid: must be 1 (off) ..= {}", gro::MAX_GRO)
            }
        }
    }
}

impl std::error::Error for SimConfigError {}

impl SimConfig {
    /// Checks the configuration; call it before [`SimNic::new`], which
    /// cannot fail and clamps instead.
    ///
    /// ```
    /// use hw_sim::{SimConfig, SimConfigError};
    /// assert!(SimConfig { gro: 16, ..SimConfig::default() }.validate().is_ok());
    /// assert_eq!(SimConfig { gro: 0, ..SimConfig::default() }.validate(), Err(SimConfigError::Gro(0)));
    /// assert!(SimConfig { gro: 65, ..SimConfig::default() }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if !(1..=gro::MAX_GRO).contains(&self.gro) {
            return Err(SimConfigError::Gro(self.gro));
        }
        Ok(())
    }
}

/// Cumulative counters of the model (not clear-on-read, independent of the
/// statistics registers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// Packets written to an RX ring with EOP (a coalesced packet counts once).
    pub rx_frames: u64,
    /// Their bytes (after padding to 60, without FCS).
    pub rx_bytes: u64,
    /// No room in the ring (MPC), including looped-back frames; a coalesced
    /// packet counts its segments.
    pub rx_missed: u64,
    /// Coalesced packets (two or more segments) written to a ring.
    pub gro_packets: u64,
    /// Wire segments inside them.
    pub gro_segments: u64,
    /// Dropped because the link was down.
    pub rx_link_down: u64,
    /// Dropped because RCTL.EN or the queue was off.
    pub rx_disabled: u64,
    /// Dropped because the queue's DMA engine was stalled (a fault hook).
    pub rx_stalled: u64,
    /// Dropped by the address filter.
    pub rx_filtered: u64,
    /// Dropped as too long (ROC).
    pub rx_oversize: u64,
    /// DMA to or from an IOVA range not inside one mapping (RX frame dropped
    /// or TX descriptor/frame skipped; nothing touched).
    pub dma_faults: u64,
    /// Frames transmitted (to the wire or looped back).
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the transmitter completed but could not send: link down,
    /// longer than 16 KiB, too many buffers, a DMA fault, under 14 bytes.
    pub tx_dropped: u64,
    /// Transmitted frames that went back into the receive path (RCTL.LBM_MAC
    /// or PHY loopback).
    pub loopback_frames: u64,
}
