//! The deterministic byte pattern senders use so the receiver can verify
//! every byte in place.
//!
//! **Definition:** byte `i` of a connection's stream (counting from 0 at
//! the first byte after the handshake) is `i mod 251`. 251 is prime, so a
//! lost, duplicated or shifted run of any length other than a multiple of
//! 251 shows up at once, and a bit flip always does. Any sender can produce
//! it; in Python: `bytes(i % 251 for i in range(n))`.
//!
//! ```
//! use stack::pattern;
//! let mut buf = vec![0u8; 1000];
//! pattern::fill(500, &mut buf);
//! assert_eq!(buf[0], (500 % 251) as u8);
//! assert_eq!(pattern::check(500, &buf), None);
//! buf[7] ^= 1;
//! assert_eq!(pattern::check(500, &buf), Some(7));
//! ```

/// The pattern's period.
pub const PERIOD: usize = 251;

/// One period repeated: comparing against it is a plain `memcmp`.
const TABLE_LEN: usize = PERIOD * 64;

static TABLE: [u8; TABLE_LEN] = {
    let mut t = [0u8; TABLE_LEN];
    let mut i = 0;
    while i < TABLE_LEN {
        t[i] = (i % PERIOD) as u8;
        i += 1;
    }
    t
};

/// The pattern byte at stream offset `offset`.
#[inline]
pub fn byte_at(offset: u64) -> u8 {
    (offset % PERIOD as u64) as u8
}

/// Fills `buf` with the pattern starting at stream offset `offset`.
pub fn fill(offset: u64, buf: &mut [u8]) {
    let mut phase = (offset % PERIOD as u64) as usize;
    for chunk in buf.chunks_mut(TABLE_LEN - PERIOD) {
        chunk.copy_from_slice(&TABLE[phase..phase + chunk.len()]);
        phase = (phase + chunk.len()) % PERIOD;
    }
}

/// Checks `data` against the pattern starting at stream offset `offset`;
/// returns the index in `data` of the first wrong byte.
pub fn check(offset: u64, data: &[u8]) -> Option<usize> {
    let mut phase = (offset % PERIOD as u64) as usize;
    let mut done = 0;
    for chunk in data.chunks(TABLE_LEN - PERIOD) {
        let want = &TABLE[phase..phase + chunk.len()];
        if chunk != want {
            let i = chunk.iter().zip(want).position(|(a, b)| a != b);
            return i.map(|i| done + i);
        }
        done += chunk.len();
        phase = (phase + chunk.len()) % PERIOD;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_check_agree_at_every_phase_and_length() {
        for offset in [0u64, 1, 250, 251, 252, 1 << 40, u64::MAX - 100_000] {
            for len in [0usize, 1, 250, 251, 16_000, 40_000] {
                let mut b = vec![0u8; len];
                fill(offset, &mut b);
                for (i, &x) in b.iter().enumerate().step_by(97) {
                    assert_eq!(x, byte_at(offset + i as u64));
                }
                assert_eq!(check(offset, &b), None);
                if len > 0 {
                    b[len - 1] ^= 0x10;
                    assert_eq!(check(offset, &b), Some(len - 1));
                    // The same bytes at a shifted offset do not verify.
                    b[len - 1] ^= 0x10;
                    if len > 1 {
                        assert!(check(offset + 1, &b).is_some());
                    }
                }
            }
        }
    }
}
