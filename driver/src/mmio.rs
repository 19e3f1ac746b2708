//! Register access through a memory-mapped BAR: the real-hardware
//! [`RegisterIo`]. The VFIO backend maps BAR0 and wraps it in [`MmioBar`];
//! the ring code cannot tell it from the simulator.
//!
//! Every access is a 32-bit volatile load or store (the `volatile` crate), so
//! the compiler neither merges, splits, reorders nor elides them. A store
//! is preceded by a release fence, so descriptor writes made before a tail
//! (doorbell) write reach memory before the device sees the tail.

use crate::device::RegisterIo;
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};
use volatile::VolatilePtr;

/// A mapped register window of `len` bytes.
pub struct MmioBar {
    base: NonNull<u32>,
    len: usize,
    /// Keeps the mapping alive (e.g. the VFIO region's mmap).
    _owner: Box<dyn Send + Sync>,
}

// SAFETY: the window is only touched through volatile 32-bit accesses,
// which the device (not Rust) serialises; `_owner` is Send + Sync.
unsafe impl Send for MmioBar {}
// SAFETY: as above: shared use issues independent volatile accesses.
unsafe impl Sync for MmioBar {}

impl MmioBar {
    /// Wraps a mapped register window.
    ///
    /// # Safety
    /// `base..base+len` must be a mapping of device registers (or memory)
    /// that stays valid while `owner` lives, 4-byte aligned.
    pub unsafe fn new(base: NonNull<u8>, len: usize, owner: Box<dyn Send + Sync>) -> MmioBar {
        MmioBar {
            base: base.cast(),
            len,
            _owner: owner,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The register at `offset`, or None when outside the window or unaligned.
    fn reg(&self, offset: u32) -> Option<VolatilePtr<'_, u32>> {
        let off = offset as usize;
        if !off.is_multiple_of(4) || off + 4 > self.len {
            return None;
        }
        // SAFETY: off + 4 <= len and off is 4-aligned, so the pointer stays
        // inside the window that `new`'s contract keeps mapped while `self`
        // (and so `_owner`) lives.
        Some(unsafe { VolatilePtr::new(self.base.add(off / 4)) })
    }
}

impl RegisterIo for MmioBar {
    fn read32(&self, offset: u32) -> u32 {
        match self.reg(offset) {
            Some(r) => r.read(),
            None => {
                tracing::error!(offset, len = self.len, "register read outside the BAR");
                // What a PCIe read of a missing register returns.
                u32::MAX
            }
        }
    }

    fn write32(&self, offset: u32, value: u32) {
        match self.reg(offset) {
            Some(r) => {
                fence(Ordering::Release);
                r.write(value)
            }
            None => tracing::error!(
                offset,
                len = self.len,
                "register write outside the BAR ignored"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_window_over_plain_memory() {
        // The window's pointer must carry write permission and must not be
        // invalidated when the owner moves into the bar: a pointer taken
        // from `&*Box` is read-only and moving the Box re-asserts its
        // uniqueness, both undefined behaviour (found by Miri). A Vec's
        // heap buffer, reached through `as_mut_ptr`, has neither problem.
        let mut mem = vec![0u32; 16];
        let base = NonNull::new(mem.as_mut_ptr())
            .expect("non-null")
            .cast::<u8>();
        // SAFETY: the Vec is the owner, moved into the bar; its heap buffer
        // does not move, and 16 u32 = 64 bytes are in bounds.
        let bar = unsafe { MmioBar::new(base, 64, Box::new(mem)) };
        bar.write32(8, 0xdead_beef);
        assert_eq!(bar.read32(8), 0xdead_beef);
        assert_eq!(bar.read32(60), 0);
        // Outside or unaligned: no panic, all-ones on read, write ignored.
        assert_eq!(bar.read32(64), u32::MAX);
        assert_eq!(bar.read32(2), u32::MAX);
        bar.write32(1 << 20, 1);
    }
}
