//! Arbitrary segments into the zero-copy TCP engine (`stack::zc`): valid
//! segments from several peers with fuzzed flags, sequence numbers,
//! options, layouts and checksum verdicts, raw frames, timer rounds,
//! reads, returns (ring and locked), sends, closes, aborts and pool
//! pressure (see `fuzz::zc`).
//!
//! Asserted: no panic; every frame accounted for; the page bound kept; no
//! page leaked once everything is returned.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz::zc::run_zc(data);
});
