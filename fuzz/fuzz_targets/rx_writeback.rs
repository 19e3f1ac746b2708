//! The driver's RX ring fed arbitrary descriptor write-backs.
//!
//! The unmodified driver runs on the simulated NIC (hw-sim) with one RX
//! ring. The fuzz input is a small program: push frames onto the wire,
//! forge the write-backs of the next descriptors (any status, error,
//! length, header-length and packet-info bits; EOP anywhere), hold a
//! descriptor back with DD clear and complete it later (out-of-order
//! completion), step the device, poll and recycle.
//!
//! Asserted, whatever the input:
//! - no panic (in the driver, the pools or the simulator);
//! - every packet handed out is self-consistent (its length is its header
//!   plus its segments, each segment fits its buffer);
//! - every frame is accounted for: each EOP write-back the driver consumed
//!   closed exactly one frame, delivered or counted in a drop reason;
//! - the ring keeps working: after the forgeries stop, a normal frame
//!   arrives byte for byte;
//! - after stop every payload page and header slot is back in its pool.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz::rx::run_rx(data);
});
