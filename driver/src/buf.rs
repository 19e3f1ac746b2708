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

use std::mem::MaybeUninit;
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

/// A first-in first-out queue of [`Buf`]s with a fixed capacity that
/// moves runs of them to and from a `Vec` in bulk (one copy per contiguous
/// piece instead of one move per buffer): the RX ring keeps the buffers
/// posted in its descriptors here, in ring order.
///
/// Buffers are moved, never duplicated: each one is in the queue, or
/// wherever it was moved to, exactly once.
pub struct BufQueue {
    /// Slots `head .. head + len` (modulo the capacity) hold buffers.
    slots: Box<[MaybeUninit<Buf>]>,
    head: usize,
    len: usize,
}

impl BufQueue {
    /// An empty queue for up to `cap` buffers.
    pub fn with_capacity(cap: usize) -> BufQueue {
        BufQueue {
            slots: (0..cap).map(|_| MaybeUninit::uninit()).collect(),
            head: 0,
            len: 0,
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slot of the `k`-th buffer from the front (`k <= capacity`).
    #[inline(always)]
    fn slot(&self, k: usize) -> usize {
        let i = self.head + k;
        if i >= self.slots.len() {
            i - self.slots.len()
        } else {
            i
        }
    }

    /// Appends `b`, or hands it back when the queue is full.
    #[inline]
    pub fn push_back(&mut self, b: Buf) -> Result<(), Buf> {
        if self.len == self.slots.len() {
            return Err(b);
        }
        let i = self.slot(self.len);
        self.slots[i].write(b);
        self.len += 1;
        Ok(())
    }

    /// Takes the first buffer.
    #[inline]
    pub fn pop_front(&mut self) -> Option<Buf> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: with `len > 0`, the slot at `head` holds a buffer; moving
        // it out and then dropping it from the range (head advances) keeps
        // every buffer in exactly one place.
        let b = unsafe { self.slots[self.head].assume_init_read() };
        self.head = self.slot(1);
        self.len -= 1;
        Some(b)
    }

    /// Takes the last buffer.
    #[inline]
    pub fn pop_back(&mut self) -> Option<Buf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let i = self.slot(self.len);
        // SAFETY: slot `i` held the last buffer of the range, which no
        // longer covers it (len decreased): the buffer moves out once.
        Some(unsafe { self.slots[i].assume_init_read() })
    }

    /// The `k`-th buffer from the front.
    #[inline]
    pub fn get(&self, k: usize) -> Option<&Buf> {
        if k >= self.len {
            return None;
        }
        // SAFETY: `k < len`, so the slot holds a buffer.
        Some(unsafe { self.slots[self.slot(k)].assume_init_ref() })
    }

    /// The buffers from the `k`-th to the last, as at most two slices in
    /// queue order.
    pub fn slices_from(&self, k: usize) -> (&[Buf], &[Buf]) {
        let k = k.min(self.len);
        let (start, n) = (self.slot(k), self.len - k);
        let first = n.min(self.slots.len() - start);
        let (a, b) = (&self.slots[start..start + first], &self.slots[..n - first]);
        // SAFETY: the two ranges are the slots of the `k`-th to last
        // buffer, all initialised; `MaybeUninit<Buf>` has `Buf`'s layout.
        unsafe {
            (
                std::slice::from_raw_parts(a.as_ptr().cast::<Buf>(), a.len()),
                std::slice::from_raw_parts(b.as_ptr().cast::<Buf>(), b.len()),
            )
        }
    }

    /// Moves the first `n` buffers (all when fewer) to the end of `dst`,
    /// in order. Returns how many.
    #[inline]
    pub fn move_front_to(&mut self, n: usize, dst: &mut Vec<Buf>) -> usize {
        let n = n.min(self.len);
        dst.reserve(n);
        let first = n.min(self.slots.len() - self.head);
        let pieces = [(self.head, first), (0, n - first)];
        for (from, count) in pieces {
            if count == 0 {
                continue;
            }
            let src = &self.slots[from..from + count];
            // SAFETY: `src` is `count` initialised slots (the front of the
            // queue's range), `dst` has room for `n >= count` more after
            // the reserve, and the regions are distinct allocations. The
            // copies become `dst`'s elements (set_len) and leave the queue's
            // range below (head, len), so each buffer stays in one place.
            unsafe {
                let end = dst.as_mut_ptr().add(dst.len());
                std::ptr::copy_nonoverlapping(src.as_ptr().cast::<Buf>(), end, count);
                dst.set_len(dst.len() + count);
            }
        }
        self.head = self.slot(n);
        self.len -= n;
        n
    }

    /// Moves the buffers `src[from..]` (none when `from` is past the end)
    /// to the back of the queue, in order, as many as fit; returns how
    /// many moved (they leave `src` from its end: what did not fit stays).
    #[inline]
    pub fn append_from(&mut self, src: &mut Vec<Buf>, from: usize) -> usize {
        let from = from.min(src.len());
        let n = (src.len() - from).min(self.slots.len() - self.len);
        let end = self.slot(self.len);
        let first = n.min(self.slots.len() - end);
        let base = src.len() - n;
        for (to, off, count) in [(end, 0, first), (0, first, n - first)] {
            if count == 0 {
                continue;
            }
            let dst = &mut self.slots[to..to + count];
            // SAFETY: `src[base + off ..][..count]` are initialised buffers
            // that leave `src` by the set_len below; `dst` is `count` free
            // slots just past the queue's range (n fits the free room),
            // which the range grows to cover (len += n).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr().add(base + off),
                    dst.as_mut_ptr().cast::<Buf>(),
                    count,
                );
            }
        }
        // SAFETY: the last `n` elements were moved out above; shrinking the
        // length forgets them without dropping.
        unsafe { src.set_len(base) };
        self.len += n;
        n
    }
}

impl Drop for BufQueue {
    fn drop(&mut self) {
        // A buffer has no destructor (it goes back to its pool by hand):
        // dropping what is left only forgets the handles, as dropping a
        // `Vec<Buf>` would.
        while self.pop_front().is_some() {}
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

    /// Handles numbered by `idx` over one shared byte (only the numbers
    /// are looked at; no bytes are read or written through them).
    fn bufs(mem: &mut [u8; 1], idx: std::ops::Range<u32>) -> Vec<Buf> {
        let ptr = NonNull::new(mem.as_mut_ptr()).unwrap();
        // SAFETY: zero-length buffers with no headroom: they cover no
        // bytes, so they cannot overlap.
        idx.map(|i| unsafe { Buf::from_raw_parts(i, i as u64, ptr, 0, 0) })
            .collect()
    }

    fn ids(v: &[Buf]) -> Vec<u32> {
        v.iter().map(Buf::idx).collect()
    }

    #[test]
    fn buf_queue_moves_runs_in_order_across_the_wrap() {
        let mut mem = [0u8; 1];
        let mut q = BufQueue::with_capacity(5);
        let mut src = bufs(&mut mem, 0..4);
        assert_eq!(q.append_from(&mut src, 1), 3, "src[1..]");
        assert_eq!(ids(&src), [0]);
        let mut out = Vec::new();
        assert_eq!(q.move_front_to(2, &mut out), 2);
        assert_eq!(ids(&out), [1, 2]);
        // Head at 2, one queued: the next four wrap around the end.
        let mut more = bufs(&mut mem, 10..16);
        assert_eq!(q.append_from(&mut more, 0), 4, "as many as fit");
        assert_eq!(ids(&more), [10, 11], "what did not fit stays");
        assert_eq!(q.len(), 5);
        assert!(q.push_back(more.pop().unwrap()).is_err(), "full");
        let (a, b) = q.slices_from(1);
        assert_eq!((ids(a), ids(b)), (vec![12, 13], vec![14, 15]));
        assert_eq!(q.get(0).map(Buf::idx), Some(3));
        assert_eq!(q.pop_back().map(|b| b.idx()), Some(15));
        assert_eq!(q.pop_front().map(|b| b.idx()), Some(3));
        assert_eq!(q.move_front_to(usize::MAX, &mut out), 3);
        assert_eq!(ids(&out), [1, 2, 12, 13, 14]);
        assert!(q.is_empty() && q.pop_front().is_none() && q.get(0).is_none());
        q.push_back(src.pop().unwrap()).unwrap();
        // Dropping a non-empty queue forgets its handles (no destructor).
        drop(q);
    }
}
