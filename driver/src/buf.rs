//! Buffers the rings borrow from pools, and the pool interface they use.
//!
//! The driver does not own an allocator: `pipeline` provides the payload
//! page pool and the header pool; the rings only need [`BufPool`]. A buffer
//! is identified by its index in its pool, so handing one around costs a
//! few words and no reference counting.

use std::ptr::NonNull;
use std::sync::Arc;

/// One DMA buffer lent out by a pool.
///
/// Deliberately neither `Clone` nor `Copy`: a `Buf` is the right to use the
/// buffer, and it goes back to its pool exactly once. `ptr` and `iova` point
/// at the same byte: the start of the area the device may fill.
#[derive(Debug, PartialEq, Eq)]
pub struct Buf {
    /// Index of the buffer in its pool.
    pub idx: u32,
    /// Device address of the buffer.
    pub iova: u64,
    /// Host address of the buffer.
    pub ptr: NonNull<u8>,
}

// SAFETY: a Buf is an exclusive handle to pool memory that stays allocated
// for the pool's life; moving it to another thread moves that exclusivity.
unsafe impl Send for Buf {}

/// A pool of equal-sized DMA buffers, used by its owner thread.
pub trait BufPool: Send {
    /// Bytes the device may write at `Buf::ptr`.
    fn buf_len(&self) -> usize;
    /// Bytes before `Buf::ptr` that belong to the same buffer and that the
    /// owner may write (room to prepend a header in place).
    fn headroom(&self) -> usize {
        0
    }
    /// Owner fast path: a free buffer, or `None` when the pool is empty.
    fn alloc(&mut self) -> Option<Buf>;
    /// Owner fast path: give a buffer back.
    fn recycle(&mut self, buf: Buf);
    /// The path for buffers coming back from other threads, or from drops
    /// that cannot reach the owner.
    fn returner(&self) -> Arc<dyn BufReturn>;
}

/// Foreign return path of a pool: may be called from any thread.
pub trait BufReturn: Send + Sync {
    /// Takes every buffer out of `bufs` (leaving it empty) and returns them
    /// to the pool in one batch.
    fn give_back(&self, bufs: &mut Vec<Buf>);
}
