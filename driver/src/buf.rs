//! Buffers the rings borrow from pools, and the pool interface they use.
//!
//! The driver does not own an allocator: `pipeline` provides the payload
//! page pool and the header pool; the rings only need [`BufPool`]. A buffer
//! is identified by its index in its pool, so handing one around costs a
//! few words and no reference counting.
//!
//! This module holds the only `unsafe` needed to read or write buffer
//! bytes: a [`Buf`] knows its length and headroom, so its accessors
//! ([`Buf::as_slice`], [`Buf::as_mut_slice`], [`Buf::headroom_mut`],
//! [`Buf::with_headroom`]) are safe and bounded; nothing outside the pools
//! and the DMA modules needs a raw pointer.

use std::ptr::NonNull;
use std::sync::Arc;

/// One DMA buffer lent out by a pool.
///
/// Deliberately neither `Clone` nor `Copy`: a `Buf` is the right to use the
/// buffer, and it goes back to its pool exactly once. The buffer is `len`
/// bytes the device may fill, starting at the host address `ptr` and the
/// device address `iova` (the same byte), preceded by `headroom` bytes that
/// belong to the same buffer (room to prepend a header in place).
///
/// The invariant that makes the accessors safe, upheld by whoever creates a
/// `Buf` ([`Buf::from_raw_parts`], i.e. the pools):
/// - `ptr - headroom .. ptr + len` is initialised memory that stays
///   allocated as long as the `Buf` exists (the pools never free a region
///   while any of its buffers is lent out), and
/// - no other `Buf`, and no other view, covers those bytes while this one
///   exists: the holder has them exclusively. Posting the buffer to a
///   device lends the bytes to the device; the rings do that only for
///   buffers they hold, and hand views out only after the device's
///   write-back (DD, read with acquire ordering).
///
/// Lengths are `u16` (buffers are at most one 4 KiB page), which keeps a
/// `Buf` at three words: the size it had as a bare pointer.
#[derive(Debug, PartialEq, Eq)]
pub struct Buf {
    idx: u32,
    len: u16,
    headroom: u16,
    iova: u64,
    ptr: NonNull<u8>,
}

// SAFETY: a Buf is an exclusive handle to pool memory that stays allocated
// while it exists; moving it to another thread moves that exclusivity.
unsafe impl Send for Buf {}
// SAFETY: `&Buf` only gives shared (read-only) views of the bytes, and no
// one else writes them while the Buf exists (see the type's invariant).
unsafe impl Sync for Buf {}

impl Buf {
    /// Largest `len` or `headroom` a `Buf` can describe.
    pub const MAX_LEN: usize = u16::MAX as usize;

    /// Makes a handle for buffer `idx` of a pool.
    ///
    /// # Safety
    /// `ptr - headroom .. ptr + len` must be initialised memory, valid for
    /// reads and writes, that stays allocated while the `Buf` exists, and
    /// that no other `Buf` or reference covers while it exists (see the
    /// type's invariant). `iova` must be the device address of `ptr`.
    #[inline(always)]
    pub unsafe fn from_raw_parts(
        idx: u32,
        iova: u64,
        ptr: NonNull<u8>,
        len: u16,
        headroom: u16,
    ) -> Self {
        Buf {
            idx,
            len,
            headroom,
            iova,
            ptr,
        }
    }

    /// Index of the buffer in its pool.
    #[inline(always)]
    pub fn idx(&self) -> u32 {
        self.idx
    }

    /// Device address of the buffer's first byte (after the headroom).
    #[inline(always)]
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Host address of the buffer's first byte (after the headroom), for
    /// the DMA modules and for address checks; reading or writing through
    /// it is the caller's `unsafe`.
    #[inline(always)]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Bytes the device may write (the pool's buffer length).
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        self.len as usize
    }

    /// Bytes in front of the buffer that belong to it.
    #[inline(always)]
    pub fn headroom(&self) -> usize {
        self.headroom as usize
    }

    /// The first `len` bytes of the buffer (`len` is clipped to
    /// [`Buf::capacity`], so a bad length gives a short slice, never a
    /// panic or a read past the buffer).
    #[inline]
    pub fn as_slice(&self, len: usize) -> &[u8] {
        let n = len.min(self.len as usize);
        // SAFETY: `n <= self.len`, so the range lies in the buffer, which is
        // initialised, allocated while `self` lives and written by no one
        // else while `self` exists (type invariant); `&self` keeps `&mut`
        // views from being made meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), n) }
    }

    /// The first `len` bytes of the buffer, writable (`len` clipped to
    /// [`Buf::capacity`]).
    #[inline]
    pub fn as_mut_slice(&mut self, len: usize) -> &mut [u8] {
        let n = len.min(self.len as usize);
        // SAFETY: as in `as_slice`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), n) }
    }

    /// The `n` headroom bytes right in front of the buffer, writable (`n`
    /// clipped to [`Buf::headroom`]): where a header is prepended in place.
    #[inline]
    pub fn headroom_mut(&mut self, n: usize) -> &mut [u8] {
        let n = n.min(self.headroom as usize);
        // SAFETY: `n <= headroom`, so `ptr - n .. ptr` lies in the buffer's
        // headroom, which belongs to this buffer alone (type invariant);
        // `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().sub(n), n) }
    }

    /// `len` bytes starting `front` bytes before the buffer (the last
    /// `front` bytes of the headroom, then the buffer): a header prepended
    /// in place followed by the payload. `front` is clipped to
    /// [`Buf::headroom`] and the end to the end of the buffer.
    #[inline]
    pub fn with_headroom(&self, front: usize, len: usize) -> &[u8] {
        let front = front.min(self.headroom as usize);
        let n = len.min(front + self.len as usize);
        // SAFETY: `ptr - front .. ptr - front + n` lies within
        // `ptr - headroom .. ptr + len`, which belongs to this buffer
        // (type invariant); `&self` keeps `&mut` views away meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().sub(front), n) }
    }
}

/// A pool of equal-sized DMA buffers, used by its owner thread.
pub trait BufPool: Send {
    /// Bytes the device may write per buffer ([`Buf::capacity`]).
    fn buf_len(&self) -> usize;
    /// Bytes before each buffer that belong to it and that its holder may
    /// write (room to prepend a header in place; [`Buf::headroom`]).
    fn headroom(&self) -> usize {
        0
    }
    /// Owner fast path: a free buffer, or `None` when the pool is empty.
    fn alloc(&mut self) -> Option<Buf>;
    /// Owner fast path in bulk: up to `n` free buffers, handed to `f` one
    /// by one in the order that many calls of [`BufPool::alloc`] would give
    /// them. Returns how many: fewer than `n` only when the pool ran empty.
    /// Pools override it to pay their per-call costs (checks, dispatch,
    /// counters) once per call instead of once per buffer: the RX ring's
    /// refill takes all its buffers this way.
    fn alloc_bulk(&mut self, n: usize, mut f: impl FnMut(Buf)) -> usize
    where
        Self: Sized,
    {
        for got in 0..n {
            match self.alloc() {
                Some(b) => f(b),
                None => return got,
            }
        }
        n
    }
    /// Owner fast path: give a buffer back.
    fn recycle(&mut self, buf: Buf);
    /// Owner fast path in bulk: gives back every buffer `bufs` yields, as
    /// that many calls of [`BufPool::recycle`] would (the RX ring returns a
    /// whole batch this way). Pools override it to keep their state in
    /// registers and update their counters once.
    fn recycle_bulk(&mut self, bufs: impl Iterator<Item = Buf>)
    where
        Self: Sized,
    {
        for b in bufs {
            self.recycle(b);
        }
    }
    /// The path for buffers coming back from other threads, or from drops
    /// that cannot reach the owner.
    fn returner(&self) -> Arc<dyn BufReturn>;
}

/// A pool whose buffers are whole 4 KiB pages of one memory area, for a
/// device that is handed the area itself (an AF_XDP UMEM) instead of one
/// mapping per buffer.
///
/// # Safety
/// Implementors promise that [`PageArea::area`] is page-aligned memory,
/// valid for reads and writes, whose page `i` (`i * 4096 ..`) holds
/// buffer `i` of the pool ([`Buf::idx`]) at `headroom()` bytes in, and that
/// it stays allocated as long as the pool or any of its returners
/// ([`BufPool::returner`]) lives.
pub unsafe trait PageArea: BufPool {
    /// Host address and length in bytes of the area.
    fn area(&self) -> (NonNull<u8>, usize);
}

/// Foreign return path of a pool: may be called from any thread.
pub trait BufReturn: Send + Sync {
    /// Takes every buffer out of `bufs` (leaving it empty) and returns them
    /// to the pool in one batch.
    fn give_back(&self, bufs: &mut Vec<Buf>);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-byte buffer with 16 bytes of headroom over `mem`, numbered
    /// 0..80 so every view shows where it starts.
    fn buf(mem: &mut [u8; 80]) -> Buf {
        for (i, b) in mem.iter_mut().enumerate() {
            *b = i as u8;
        }
        // From the whole array, so the pointer may reach into the headroom.
        let ptr = NonNull::new(mem.as_mut_ptr().wrapping_add(16)).unwrap();
        // SAFETY: `ptr - 16 .. ptr + 64` is `mem`, initialised, and the
        // test touches `mem` only through this Buf while it lives.
        unsafe { Buf::from_raw_parts(7, 0x1000, ptr, 64, 16) }
    }

    #[test]
    fn views_stay_inside_the_buffer() {
        let mut mem = [0u8; 80];
        {
            let mut b = buf(&mut mem);
            assert_eq!(
                (b.idx(), b.iova(), b.capacity(), b.headroom()),
                (7, 0x1000, 64, 16)
            );
            assert_eq!(b.as_slice(3), [16, 17, 18]);
            assert_eq!(b.as_slice(1000).len(), 64, "clipped to the capacity");
            assert_eq!(b.as_slice(1000)[63], 79);
            assert_eq!(b.with_headroom(2, 4), [14, 15, 16, 17]);
            assert_eq!(
                b.with_headroom(100, 1),
                [0],
                "front clipped to the headroom"
            );
            assert_eq!(b.with_headroom(16, 1000).len(), 80);
            b.headroom_mut(2).copy_from_slice(&[0xaa, 0xbb]);
            assert_eq!(b.headroom_mut(1000).len(), 16);
            b.as_mut_slice(1).copy_from_slice(&[0xcc]);
            assert_eq!(b.as_mut_slice(1000).len(), 64);
            assert_eq!(b.with_headroom(3, 4), [13, 0xaa, 0xbb, 0xcc]);
            assert_eq!(
                std::mem::size_of::<Buf>(),
                24,
                "three words, as a bare pointer was"
            );
        }
        // The handle is gone: `mem` is ours again.
        assert_eq!(mem[14..17], [0xaa, 0xbb, 0xcc]);
    }
}
