//! Arbitrary bytes as a pcap file, opened and replayed by
//! `wires::PcapReplay`.
//!
//! Asserted: no panic (a damaged file is an error or a clean, possibly
//! truncated, replay); every frame replayed is 14..=16384 bytes; the counts
//! agree (frames returned per pass == `len()`); a second pass after
//! `rewind` gives the same frames.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz::run_pcap(data);
});
