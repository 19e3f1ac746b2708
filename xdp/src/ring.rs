//! The four single-producer single-consumer rings an AF_XDP socket shares
//! with the kernel, mapped from the socket: fill and TX (we produce), RX
//! and completion (we consume). Producer and consumer indices are
//! free-running `u32`s; a ring of `size` entries (a power of two) holds
//! `producer - consumer` of them. We publish with release stores and read
//! the kernel's index with acquire loads, as the kernel's side
//! (net/xdp/xsk_queue.h) expects.

use crate::sys;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring with entries of type `T` (`u64` addresses for fill and
/// completion, [`sys::XdpDesc`] for RX and TX).
pub struct Ring<T: Copy> {
    map: *mut u8,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    /// Our copy of the index we own (producer or consumer).
    cached_own: u32,
    /// Our last view of the kernel's index.
    cached_other: u32,
    _t: PhantomData<T>,
}

// SAFETY: the mapping is owned by this value and used by one thread at a
// time (through `&mut self`); the kernel side synchronises through the
// atomics.
unsafe impl<T: Copy> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `size` entries described by `off` at page offset
    /// `pgoff` of socket `fd`.
    pub fn map(
        fd: i32,
        off: &sys::XdpRingOffset,
        size: u32,
        pgoff: libc::off_t,
    ) -> io::Result<Ring<T>> {
        debug_assert!(size.is_power_of_two());
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        let map = sys::mmap_ring(fd, map_len, pgoff)?;
        // SAFETY: the kernel's offsets lie within the mapping it sized for
        // `size` entries; the indices and flags are 4-byte aligned u32s
        // the kernel accesses atomically, and the descriptors follow at
        // `off.desc`, aligned for their type.
        unsafe {
            let producer = map.add(off.producer as usize) as *const AtomicU32;
            let consumer = map.add(off.consumer as usize) as *const AtomicU32;
            Ok(Ring {
                map,
                map_len,
                producer,
                consumer,
                flags: map.add(off.flags as usize) as *const AtomicU32,
                descs: map.add(off.desc as usize) as *mut T,
                mask: size - 1,
                cached_own: 0,
                cached_other: 0,
                _t: PhantomData,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.producer }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.consumer }
    }

    pub fn size(&self) -> u32 {
        self.mask + 1
    }

    /// Whether the kernel asked for a wake-up (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: points into our live mapping (see `map`).
        unsafe { &*self.flags }.load(Ordering::Relaxed) & sys::XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, TX) ----

    /// Entries we may produce now.
    pub fn free(&mut self) -> u32 {
        let size = self.mask + 1;
        let mut free = size - self.cached_own.wrapping_sub(self.cached_other);
        if free == 0 {
            self.cached_other = self.consumer().load(Ordering::Acquire);
            free = size - self.cached_own.wrapping_sub(self.cached_other);
        }
        free
    }

    /// Writes entry number `i` (0-based) past our producer index; call
    /// [`Ring::submit`] with the count afterwards. `i < free()`.
    pub fn write(&mut self, i: u32, v: T) {
        let slot = (self.cached_own.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `slot <= mask`, inside the descriptor array of our
        // mapping; the entry lies between our producer and the kernel's
        // consumer, so the kernel does not read it until we publish it.
        unsafe { self.descs.add(slot).write_volatile(v) }
    }

    /// Publishes `n` written entries (release: the entries before the index).
    pub fn submit(&mut self, n: u32) {
        self.cached_own = self.cached_own.wrapping_add(n);
        self.producer().store(self.cached_own, Ordering::Release);
    }

    /// Entries produced and not yet consumed by the kernel.
    pub fn outstanding(&mut self) -> u32 {
        self.cached_other = self.consumer().load(Ordering::Acquire);
        self.cached_own.wrapping_sub(self.cached_other)
    }

    // ---- consumer side (RX, completion) ----

    /// Entries ready to consume (acquire: their contents are visible).
    pub fn ready(&mut self) -> u32 {
        let mut n = self.cached_other.wrapping_sub(self.cached_own);
        if n == 0 {
            self.cached_other = self.producer().load(Ordering::Acquire);
            n = self.cached_other.wrapping_sub(self.cached_own);
        }
        n
    }

    /// Entry number `i` past our consumer index; `i < ready()`.
    pub fn read(&self, i: u32) -> T {
        let slot = (self.cached_own.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `slot <= mask`, inside our mapping; the kernel published
        // the entry (producer index read with acquire) and does not touch
        // it until we release it.
        unsafe { self.descs.add(slot).read_volatile() }
    }

    /// Gives `n` consumed entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        self.cached_own = self.cached_own.wrapping_add(n);
        self.consumer().store(self.cached_own, Ordering::Release);
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; no reference into it
        // outlives `self`.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}
