//! Device-access traits: everything the ring and bring-up code need from a
//! backend. The simulator (`hw-sim`) implements them in software; the VFIO
//! backend implements them on a real or QEMU-emulated NIC. Ring code never
//! knows which one it runs on.

use crate::dma::DmaError;

/// 32-bit register access to the device's BAR0.
///
/// Writes are posted in program order after all earlier memory writes (the
/// backend issues whatever fence its platform needs), so a tail write
/// publishes the descriptors written before it.
pub trait RegisterIo: Send + Sync {
    fn read32(&self, offset: u32) -> u32;
    fn write32(&self, offset: u32, value: u32);
}

/// The IOMMU view of a device: which host memory it may reach, at which
/// I/O virtual addresses.
pub trait DmaMapper: Send + Sync {
    /// Let the device reach `len` bytes at `host` through `iova`.
    ///
    /// # Safety
    /// `host..host+len` must stay valid (allocated, not moved) until
    /// [`DmaMapper::unmap`] for this IOVA returns; the device may read and
    /// write it at any time until then.
    unsafe fn map(&self, iova: u64, host: *mut u8, len: usize) -> Result<(), DmaError>;

    /// Revoke a mapping made by `map`. When this returns the device no longer
    /// touches the memory.
    fn unmap(&self, iova: u64, len: usize) -> Result<(), DmaError>;
}

/// A complete backend: registers plus DMA mapping.
pub trait Device: RegisterIo + DmaMapper {
    /// Short human-readable name for logs ("sim", "vfio:0000:03:00.0").
    fn name(&self) -> String;
}
