//! Arbitrary bytes as Ethernet frames through the stack.
//!
//! Each packet of the input (see `fuzz::encode_packet`) is laid into real
//! payload pages and header slots the way the driver delivers them (split
//! on or off, any header length, any segmentation, either checksum verdict
//! from the device), made contiguous by `stack::frame::Presenter`, and fed
//! to smoltcp's `Interface` inside a `TcpSink` (sink and iperf3 listeners,
//! pattern verification on or off) through an in-memory `phy::Device`.
//!
//! Asserted: no panic; no buffer left in a packet after the presenter took
//! it; every packet either gave a frame or was counted as dropped; after
//! the run every payload page and header slot is back in its pool.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz::run_stack(data);
});
