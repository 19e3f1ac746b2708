//! Userspace driver for the Intel igb family (82576, I350): descriptor rings
//! with header split and page recycling.
//!
//! The ring and bring-up code are written against the device-access traits
//! in [`device`] and the buffer-pool trait in [`buf`], so the same code runs
//! on the software NIC (`hw-sim`) and, through VFIO, on real hardware.
//!
//! - [`regs`]: the BAR0 registers we use.
//! - [`desc`]: advanced RX/TX descriptor layouts.
//! - [`dma`]: DMA memory, IOVA allocation.
//! - [`igb`]: reset, link, MAC, queue setup.
//! - [`rx`] / [`tx`]: the rings.
//! - [`rss`]: receive side scaling (Toeplitz hash, key, redirection table).
//! - [`recovery`]: device-reset recovery and the queue watchdog, shared by
//!   every queue of a device.
//! - [`vfio`]: the real-hardware backend (vfio-pci, IOMMU, BAR0 mmap).

pub mod buf;
pub mod desc;
pub mod device;
pub mod dma;
pub mod igb;
pub mod mmio;
pub mod recovery;
pub mod regs;
pub mod rss;
pub mod rx;
pub mod tx;
pub mod vfio;

pub use buf::{Buf, BufPool, BufReturn, PageArea};
pub use device::{Device, DmaMapper, RegisterIo};
pub use dma::{DmaError, DmaRegion, DmaSpace};
pub use igb::{Igb, IgbConfig, IgbError};
pub use recovery::{DeviceCtl, Health, QueueWatch, RecoveryStats, WatchConfig};
pub use rss::RssConfig;
pub use rx::{
    new_ring_id, Csum, DropReason, OwnedPacket, PacketRef, RxBatch, RxConfig, RxRing, RxStats, Seg,
    WbObserver,
};
pub use tx::{TxBuf, TxConfig, TxRing, TxStats};

/// Header split mode of an RX queue (SRRCTL.DESCTYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SplitMode {
    /// ADV_ONEBUF: the whole frame in the payload buffer.
    Off,
    /// HDR_SPLIT: TCP/UDP split after L4, other IP after L3, non-IP not split.
    On,
    /// HDR_SPLIT_ALWAYS: frames that fit go wholly into the header buffer.
    Always,
}

impl std::str::FromStr for SplitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(SplitMode::Off),
            "on" => Ok(SplitMode::On),
            "always" => Ok(SplitMode::Always),
            _ => Err(format!(
                "header split mode must be off, on or always, not {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for SplitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitMode::Off => "off",
            SplitMode::On => "on",
            SplitMode::Always => "always",
        })
    }
}
