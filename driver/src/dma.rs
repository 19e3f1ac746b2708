//! DMA memory: page-backed regions locked in memory, an IOVA allocator of our
//! own (IOVAs are never virtual addresses), and [`DmaSpace`] which ties both
//! to a device's [`DmaMapper`].
//!
//! A [`DmaRegion`] is mapped for the device when created and unmapped before
//! its memory is released, so the device can never write freed memory.

use crate::device::DmaMapper;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DmaError {
    #[error("out of memory allocating {0} bytes of DMA memory: {1}")]
    Alloc(usize, String),
    #[error("IOVA space exhausted ({0} bytes requested)")]
    IovaExhausted(usize),
    #[error("IOVA range {iova:#x}+{len:#x} overlaps an existing mapping")]
    Overlap { iova: u64, len: usize },
    #[error("no mapping at IOVA {0:#x}")]
    NotMapped(u64),
    #[error("DMA mapping refused by the device backend: {0}")]
    Backend(String),
}

pub const PAGE_SIZE: usize = 4096;
pub const HUGE_PAGE_SIZE: usize = 2 << 20;

/// Hands out IOVA ranges from a fixed window. First fit over a sorted free
/// list; freed ranges are merged with their neighbours.
#[derive(Debug)]
pub struct IovaAllocator {
    /// Free ranges (start, len), sorted by start, never adjacent.
    free: Vec<(u64, u64)>,
}

impl IovaAllocator {
    /// IOVAs start well above zero so a zeroed descriptor never points at
    /// mapped memory, and stay below 2^39 for 39-bit IOMMUs.
    pub const DEFAULT_BASE: u64 = 0x1000_0000;
    pub const DEFAULT_END: u64 = 1 << 39;

    pub fn new(base: u64, end: u64) -> Self {
        IovaAllocator {
            free: vec![(base, end - base)],
        }
    }

    /// An `align`-aligned range of `len` bytes (both powers of two / page multiples).
    pub fn alloc(&mut self, len: usize, align: usize) -> Result<u64, DmaError> {
        let len = len as u64;
        let align = align.max(PAGE_SIZE) as u64;
        for i in 0..self.free.len() {
            let (start, flen) = self.free[i];
            let aligned = start.div_ceil(align) * align;
            let pad = aligned - start;
            if flen < pad + len {
                continue;
            }
            let rest = flen - pad - len;
            // Replace the entry with the pad before and the rest after.
            let mut repl = Vec::with_capacity(2);
            if pad > 0 {
                repl.push((start, pad));
            }
            if rest > 0 {
                repl.push((aligned + len, rest));
            }
            self.free.splice(i..=i, repl);
            return Ok(aligned);
        }
        Err(DmaError::IovaExhausted(len as usize))
    }

    pub fn free(&mut self, iova: u64, len: usize) {
        let len = len as u64;
        let pos = self.free.partition_point(|&(s, _)| s < iova);
        self.free.insert(pos, (iova, len));
        // Merge with the next, then with the previous.
        if pos + 1 < self.free.len() && self.free[pos].0 + self.free[pos].1 == self.free[pos + 1].0
        {
            self.free[pos].1 += self.free[pos + 1].1;
            self.free.remove(pos + 1);
        }
        if pos > 0 && self.free[pos - 1].0 + self.free[pos - 1].1 == self.free[pos].0 {
            self.free[pos - 1].1 += self.free[pos].1;
            self.free.remove(pos);
        }
    }
}

/// A mapper that accepts every mapping and enforces nothing: for pools
/// used without a device (benchmarks, pool unit tests). Never hand it to a
/// real device.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIommu;

impl DmaMapper for NoIommu {
    unsafe fn map(&self, _iova: u64, _host: *mut u8, _len: usize) -> Result<(), DmaError> {
        Ok(())
    }
    fn unmap(&self, _iova: u64, _len: usize) -> Result<(), DmaError> {
        Ok(())
    }
}

/// A device's DMA address space: its mapper plus the IOVA allocator.
pub struct DmaSpace {
    mapper: Arc<dyn DmaMapper>,
    iovas: Mutex<IovaAllocator>,
    /// Try 2 MiB hugepages first (falls back to 4 KiB pages).
    pub try_hugepages: bool,
}

impl DmaSpace {
    pub fn new(mapper: Arc<dyn DmaMapper>) -> Arc<Self> {
        Arc::new(DmaSpace {
            mapper,
            iovas: Mutex::new(IovaAllocator::new(
                IovaAllocator::DEFAULT_BASE,
                IovaAllocator::DEFAULT_END,
            )),
            try_hugepages: true,
        })
    }

    /// Allocates `len` bytes (rounded up to pages), zeroed, locked in memory
    /// where the system allows it, and mapped for the device.
    pub fn alloc(self: &Arc<Self>, len: usize) -> Result<DmaRegion, DmaError> {
        let mem = HostMem::alloc(len, self.try_hugepages)?;
        let align = if mem.huge { HUGE_PAGE_SIZE } else { PAGE_SIZE };
        let iova = self
            .iovas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc(mem.len, align)?;
        // SAFETY: `mem` is owned by the region we return, which unmaps the
        // IOVA in Drop before `mem` is dropped (field order and explicit
        // unmap below), so the mapping never outlives the memory.
        let mapped = unsafe { self.mapper.map(iova, mem.ptr.as_ptr(), mem.len) };
        if let Err(e) = mapped {
            self.iovas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(iova, mem.len);
            return Err(e);
        }
        Ok(DmaRegion {
            mem,
            iova,
            space: Arc::clone(self),
        })
    }
}

/// Anonymous page memory, locked, released with munmap.
struct HostMem {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: HostMem is a plain owned allocation; access is coordinated by its users.
unsafe impl Send for HostMem {}
// SAFETY: as above; HostMem itself has no interior state.
unsafe impl Sync for HostMem {}

impl HostMem {
    /// Under Miri (which cannot mmap with these flags nor mlock) the memory
    /// comes from the global allocator, page aligned and zeroed like an
    /// anonymous mapping, so the pool and ring tests run there too.
    #[cfg(miri)]
    fn alloc(len: usize, _try_huge: bool) -> Result<HostMem, DmaError> {
        let plen = len.max(1).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let layout = std::alloc::Layout::from_size_align(plen, PAGE_SIZE)
            .map_err(|e| DmaError::Alloc(plen, e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
            .ok_or_else(|| DmaError::Alloc(plen, "out of memory".into()))?;
        Ok(HostMem {
            ptr,
            len: plen,
            huge: false,
        })
    }

    #[cfg(not(miri))]
    fn alloc(len: usize, try_huge: bool) -> Result<HostMem, DmaError> {
        if try_huge && len >= HUGE_PAGE_SIZE {
            let hlen = len.div_ceil(HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE;
            if let Some(ptr) = Self::mmap(hlen, libc::MAP_HUGETLB) {
                return Ok(HostMem {
                    ptr,
                    len: hlen,
                    huge: true,
                });
            }
            tracing::debug!(len, "no 2 MiB hugepages available, using 4 KiB pages");
        }
        let plen = len.max(1).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let ptr = Self::mmap(plen, 0)
            .ok_or_else(|| DmaError::Alloc(plen, std::io::Error::last_os_error().to_string()))?;
        Ok(HostMem {
            ptr,
            len: plen,
            huge: false,
        })
    }

    #[cfg(not(miri))]
    fn mmap(len: usize, extra: libc::c_int) -> Option<NonNull<u8>> {
        // SAFETY: anonymous private mapping with no address hint; the result
        // is checked for MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // Pin the pages: a device must never see them swapped or moved.
        // SAFETY: p..p+len is the mapping we just created.
        if unsafe { libc::mlock(p, len) } != 0 {
            tracing::debug!(
                len,
                "mlock failed ({}); DMA memory is not locked",
                std::io::Error::last_os_error()
            );
        }
        NonNull::new(p.cast())
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        #[cfg(miri)]
        // SAFETY: allocated by `HostMem::alloc` with this layout (len is a
        // non-zero multiple of PAGE_SIZE), freed only here.
        unsafe {
            std::alloc::dealloc(
                self.ptr.as_ptr(),
                std::alloc::Layout::from_size_align_unchecked(self.len, PAGE_SIZE),
            )
        };
        #[cfg(not(miri))]
        // SAFETY: ptr/len describe a mapping created by `HostMem::mmap` and
        // unmapped only here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len)
        };
    }
}

/// A DMA-able region: host memory plus the IOVA the device uses for it.
pub struct DmaRegion {
    mem: HostMem,
    iova: u64,
    space: Arc<DmaSpace>,
}

impl DmaRegion {
    pub fn len(&self) -> usize {
        self.mem.len
    }
    pub fn is_empty(&self) -> bool {
        self.mem.len == 0
    }
    pub fn iova(&self) -> u64 {
        self.iova
    }
    pub fn is_hugepage(&self) -> bool {
        self.mem.huge
    }
    /// Host address of the first byte. Memory the device may write: access
    /// it only through raw pointers or atomics, never as `&mut [u8]` while
    /// the device owns that part.
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.ptr.as_ptr()
    }
    /// IOVA of `offset` bytes in.
    pub fn iova_at(&self, offset: usize) -> u64 {
        debug_assert!(offset <= self.len());
        self.iova + offset as u64
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        if let Err(e) = self.space.mapper.unmap(self.iova, self.mem.len) {
            // The memory must not be freed while the device might still reach
            // it: leak it instead.
            tracing::error!(
                "DMA unmap of {:#x} failed ({e}); leaking the region",
                self.iova
            );
            let dummy = HostMem {
                ptr: NonNull::dangling(),
                len: 0,
                huge: false,
            };
            std::mem::forget(std::mem::replace(&mut self.mem, dummy));
            return;
        }
        self.space
            .iovas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free(self.iova, self.mem.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_alloc_aligns_and_merges() {
        let mut a = IovaAllocator::new(0x1000_0000, 0x2000_0000);
        let x = a.alloc(8192, 4096).unwrap();
        let y = a.alloc(4096, 2 << 20).unwrap();
        assert_eq!(x, 0x1000_0000);
        assert_eq!(y % (2 << 20), 0);
        a.free(x, 8192);
        a.free(y, 4096);
        assert_eq!(a.free, vec![(0x1000_0000, 0x1000_0000)]);
        assert!(a.alloc(0x2000_0000, 4096).is_err());
    }
}
