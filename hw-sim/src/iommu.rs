//! The simulated IOMMU: which host memory the device may reach, at which
//! IOVAs, and the only code in the crate that touches that memory.
//!
//! [`Iommu`] keeps the mapping table made by `DmaMapper::map`/`unmap` in a
//! `RwLock`. The engine takes the read guard once per `step()` as a
//! [`DmaView`] and holds it while doing DMA; `unmap` needs the write lock, so
//! when it returns no access through the old mapping can be in flight or
//! start later. Every device access goes through [`DmaView::translate`]: a
//! range not fully inside one mapping is a DMA fault and nothing is touched.
//!
//! All of the crate's memory `unsafe` is in this module (the only other
//! `unsafe`, system calls on a TAP device, is in `wire::tap`).

use driver::desc::DescSlot;
use driver::DmaError;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::{RwLock, RwLockReadGuard};

/// One IOVA -> host mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mapping {
    iova: u64,
    len: u64,
    /// Host address as an integer: the table itself never dereferences it.
    host: usize,
}

impl Mapping {
    #[inline]
    fn end(&self) -> u64 {
        self.iova + self.len
    }

    /// The host address of `iova..iova+len` if the whole range is inside.
    #[inline]
    fn host_of(&self, iova: u64, len: u64) -> Option<usize> {
        let end = iova.checked_add(len)?;
        if iova >= self.iova && end <= self.end() && self.len != 0 {
            Some(self.host + (iova - self.iova) as usize)
        } else {
            None
        }
    }
}

/// The mapping table.
#[derive(Debug, Default)]
pub(crate) struct Iommu {
    /// Sorted by IOVA, never overlapping.
    maps: RwLock<Vec<Mapping>>,
}

impl Iommu {
    /// Records a mapping. Refuses empty, wrapping or overlapping ranges.
    pub(crate) fn map(&self, iova: u64, host: *mut u8, len: usize) -> Result<(), DmaError> {
        let len64 = len as u64;
        if len == 0
            || iova.checked_add(len64).is_none()
            || (host as usize).checked_add(len).is_none()
        {
            return Err(DmaError::Backend(format!(
                "invalid DMA range {iova:#x}+{len:#x}"
            )));
        }
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let pos = maps.partition_point(|m| m.iova < iova);
        let overlaps_prev = pos > 0 && maps[pos - 1].end() > iova;
        let overlaps_next = pos < maps.len() && maps[pos].iova < iova + len64;
        if overlaps_prev || overlaps_next {
            return Err(DmaError::Overlap { iova, len });
        }
        maps.insert(
            pos,
            Mapping {
                iova,
                len: len64,
                host: host as usize,
            },
        );
        Ok(())
    }

    /// Removes the mapping made at exactly `iova` with length `len`. Waits
    /// for the engine's current step: when this returns the device no longer
    /// touches the memory.
    pub(crate) fn unmap(&self, iova: u64, len: usize) -> Result<(), DmaError> {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        match maps.binary_search_by_key(&iova, |m| m.iova) {
            Ok(i) if maps[i].len == len as u64 => {
                maps.remove(i);
                Ok(())
            }
            _ => Err(DmaError::NotMapped(iova)),
        }
    }

    /// Number of live mappings (tests, diagnostics).
    pub(crate) fn len(&self) -> usize {
        self.maps.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes the read side for one engine step.
    pub(crate) fn view(&self) -> DmaView<'_> {
        DmaView {
            maps: self.maps.read().unwrap_or_else(|e| e.into_inner()),
            cache: Default::default(),
        }
    }

    /// Holds the write side: no DMA is in flight while the guard lives. Used
    /// by CTRL.RST so a reset never lands in the middle of a step.
    pub(crate) fn quiesce(&self) -> impl Drop + '_ {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Which last-hit cache entry a lookup uses: descriptor rings, header
/// buffers and payload buffers usually live in three different regions.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hint {
    Ring = 0,
    Header = 1,
    Payload = 2,
}

/// The device's view of memory for one step: the read guard plus a tiny
/// last-hit cache per [`Hint`].
pub(crate) struct DmaView<'a> {
    maps: RwLockReadGuard<'a, Vec<Mapping>>,
    cache: [Cell<Mapping>; 3],
}

impl<'a> DmaView<'a> {
    /// Translates `iova..iova+len` (entirely inside one mapping) to a buffer
    /// the device may access for as long as this view lives.
    #[inline]
    pub(crate) fn translate(&self, iova: u64, len: usize, hint: Hint) -> Option<DmaBuf<'_>> {
        let len64 = len as u64;
        let slot = &self.cache[hint as usize];
        let host = match slot.get().host_of(iova, len64) {
            Some(h) => h,
            None => {
                let i = self
                    .maps
                    .partition_point(|m| m.iova <= iova)
                    .checked_sub(1)?;
                let m = self.maps[i];
                let h = m.host_of(iova, len64)?;
                slot.set(m);
                h
            }
        };
        Some(DmaBuf {
            ptr: host as *mut u8,
            len,
            _view: PhantomData,
        })
    }

    /// The descriptor at `iova`, or `None` (a DMA fault) when the 16 bytes
    /// are not mapped or not 16-byte aligned in host memory.
    #[inline]
    pub(crate) fn desc(&self, iova: u64) -> Option<&DescSlot> {
        let b = self.translate(iova, std::mem::size_of::<DescSlot>(), Hint::Ring)?;
        if b.ptr as usize & (std::mem::align_of::<DescSlot>() - 1) != 0 {
            return None;
        }
        // SAFETY: `b` covers size_of::<DescSlot>() bytes inside a live
        // mapping, and the pointer is aligned for DescSlot (checked above).
        // The mapping's memory stays valid while the read guard in `self`
        // lives (DmaMapper::map's contract plus unmap taking the write lock),
        // and the returned reference cannot outlive `self`. DescSlot is made
        // of atomics only, so a shared reference tolerates the driver
        // accessing the same descriptor concurrently, and any bit pattern is
        // a valid DescSlot.
        Some(unsafe { &*(b.ptr as *const DescSlot) })
    }
}

/// A translated device-accessible range, valid while its [`DmaView`] lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DmaBuf<'v> {
    ptr: *mut u8,
    len: usize,
    _view: PhantomData<&'v ()>,
}

impl DmaBuf<'_> {
    #[inline]
    fn fits(&self, offset: usize, n: usize) -> bool {
        matches!(offset.checked_add(n), Some(end) if end <= self.len)
    }

    /// Device write: copies `src` to `offset` bytes in. Out-of-range writes
    /// are refused (returns false) and touch nothing.
    #[inline]
    pub(crate) fn write(&self, offset: usize, src: &[u8]) -> bool {
        if !self.fits(offset, src.len()) {
            return false;
        }
        // SAFETY: offset..offset+src.len() lies inside this buffer (checked
        // above), which lies inside a live mapping whose memory the mapper
        // promised valid for writes until unmap; unmap cannot run while the
        // view that produced `self` holds the read guard. `src` is a Rust
        // slice in engine- or wire-owned memory, never in mapped DMA memory
        // (the model only reaches DMA memory through these raw pointers), so
        // the ranges do not overlap. As with a real device, the driver must
        // not read these bytes until it sees DD (published with Release).
        unsafe { copy_bytes(src.as_ptr(), self.ptr.add(offset), src.len()) };
        true
    }

    /// Device read of the whole buffer, appended to `dst` (without zeroing
    /// the new bytes first, as `resize` and [`read`](Self::read) would).
    #[inline]
    pub(crate) fn read_append(&self, dst: &mut Vec<u8>) {
        dst.reserve(self.len);
        let old = dst.len();
        // SAFETY: as in `write`: this buffer lies inside a live mapping that
        // cannot be unmapped while the view lives. The driver hands TX
        // buffers over with the TDT write (Release, read by the engine with
        // Acquire) and does not modify them until DD. `reserve` made room
        // for `self.len` more bytes after `old`, in `dst`'s own allocation,
        // which is not DMA memory; the copy initialises exactly those bytes
        // before `set_len` exposes them.
        unsafe {
            copy_bytes(self.ptr, dst.as_mut_ptr().add(old), self.len);
            dst.set_len(old + self.len);
        }
    }
}

/// `copy_nonoverlapping` that handles short copies (headers, minimum-size
/// frames) with fixed-size moves instead of a call into `memcpy`.
///
/// # Safety
/// As `std::ptr::copy_nonoverlapping(src, dst, len)`.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    use std::ptr::copy_nonoverlapping as copy;
    // SAFETY: the caller guarantees `src..src+len` readable, `dst..dst+len`
    // writable and the two disjoint; every copy below stays inside 0..len
    // (the long path copies exactly len bytes, the short path checks
    // `i + n <= len` before each fixed-size copy of n bytes).
    unsafe {
        if len > 128 {
            copy(src, dst, len);
            return;
        }
        let mut i = 0;
        while i + 16 <= len {
            copy(src.add(i), dst.add(i), 16);
            i += 16;
        }
        if i + 8 <= len {
            copy(src.add(i), dst.add(i), 8);
            i += 8;
        }
        if i + 4 <= len {
            copy(src.add(i), dst.add(i), 4);
            i += 4;
        }
        while i < len {
            copy(src.add(i), dst.add(i), 1);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_refuses_overlap_and_unmap_needs_exact_range() {
        let mut mem = vec![0u8; 8192];
        let p = mem.as_mut_ptr();
        let io = Iommu::default();
        io.map(0x1000, p, 4096).unwrap();
        assert!(matches!(
            io.map(0x1800, p, 16),
            Err(DmaError::Overlap { .. })
        ));
        assert!(matches!(
            io.map(0x0800, p, 0x1000),
            Err(DmaError::Overlap { .. })
        ));
        io.map(0x2000, p.wrapping_add(4096), 4096).unwrap();
        assert!(io.map(0x3000, p, 0).is_err());
        assert_eq!(io.len(), 2);
        assert_eq!(io.unmap(0x1000, 100), Err(DmaError::NotMapped(0x1000)));
        assert_eq!(io.unmap(0x1800, 4096), Err(DmaError::NotMapped(0x1800)));
        io.unmap(0x1000, 4096).unwrap();
        assert_eq!(io.unmap(0x1000, 4096), Err(DmaError::NotMapped(0x1000)));
    }

    #[test]
    fn translate_only_inside_one_mapping() {
        let mut mem = vec![0u8; 8192];
        let p = mem.as_mut_ptr();
        let io = Iommu::default();
        io.map(0x1000, p, 4096).unwrap();
        io.map(0x2000, p.wrapping_add(4096), 4096).unwrap();
        let v = io.view();
        assert!(v.translate(0x1000, 4096, Hint::Payload).is_some());
        assert!(v.translate(0x1F00, 0x100, Hint::Payload).is_some());
        // Adjacent mappings still do not make one range.
        assert!(v.translate(0x1F00, 0x101, Hint::Payload).is_none());
        assert!(v.translate(0xFFF, 2, Hint::Payload).is_none());
        assert!(v.translate(u64::MAX - 1, 4, Hint::Payload).is_none());
        let b = v.translate(0x2010, 4, Hint::Header).unwrap();
        assert!(b.write(0, &[1, 2, 3, 4]));
        assert!(!b.write(1, &[1, 2, 3, 4]));
        let mut out = vec![9];
        b.read_append(&mut out);
        assert_eq!(out, [9, 1, 2, 3, 4]);
        assert!(v.desc(0x1000).is_some() || (p as usize) & 15 != 0);
        assert!(v.desc(0x1008).is_none() || (p as usize + 8) & 15 == 0);
        drop(v);
        assert_eq!(&mem[4096 + 16..4096 + 20], &[1, 2, 3, 4]);
    }
}
