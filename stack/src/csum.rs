//! Internet checksums over data spread across several buffers (RFC 1071),
//! for the frames whose checksums the device did not check.

/// A running ones-complement sum over bytes fed in pieces of any length
/// (odd-length pieces carry their last byte into the next piece).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sum {
    acc: u64,
    /// A byte waiting for its partner (the high byte of the next word).
    odd: Option<u8>,
}

impl Sum {
    pub fn new() -> Sum {
        Sum::default()
    }

    /// Adds `data` as if it followed everything added so far.
    pub fn add(&mut self, mut data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(hi) = self.odd.take() {
            self.acc += u16::from_be_bytes([hi, data[0]]) as u64;
            data = &data[1..];
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let v = u64::from_be_bytes(w.try_into().unwrap_or_default());
            // Four 16-bit words at once: add the two 32-bit halves.
            self.acc += (v >> 32) + (v & 0xFFFF_FFFF);
        }
        let mut rest = words.remainder().chunks_exact(2);
        for w in &mut rest {
            self.acc += u16::from_be_bytes([w[0], w[1]]) as u64;
        }
        if let [b] = rest.remainder() {
            self.odd = Some(*b);
        }
        // Keep headroom for the next piece: fold above 2^48.
        if self.acc > 1 << 48 {
            self.acc = (self.acc & 0xFFFF_FFFF) + (self.acc >> 32);
        }
    }

    /// Adds a 16-bit word (pseudo-header fields); only valid at an even
    /// position.
    pub fn add_u16(&mut self, v: u16) {
        debug_assert!(self.odd.is_none());
        self.acc += v as u64;
    }

    /// The folded 16-bit sum (not complemented). A packet whose checksum
    /// field is included verifies when this is 0xFFFF.
    pub fn folded(&self) -> u16 {
        let mut acc = self.acc;
        if let Some(hi) = self.odd {
            acc += (hi as u64) << 8;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }
}

/// The IPv4 header checksum to store in `hdr` (with its checksum field
/// treated as zero).
pub fn ipv4_header(hdr: &[u8]) -> u16 {
    let mut s = Sum::new();
    s.add(&hdr[..10]);
    s.add(&hdr[12..]);
    !s.folded()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            acc += w as u32;
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn pieces_of_any_length_sum_like_one_buffer() {
        let data: Vec<u8> = (0..3001u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for cuts in [vec![], vec![1], vec![3, 4, 5], vec![17, 1000, 1001, 2999]] {
            let mut s = Sum::new();
            let mut prev = 0;
            for &c in cuts.iter().chain(std::iter::once(&data.len())) {
                s.add(&data[prev..c]);
                prev = c;
            }
            assert_eq!(s.folded(), reference(&data), "cuts {cuts:?}");
        }
    }

    #[test]
    fn ipv4_header_checksum_of_a_known_header() {
        // A header from RFC 1071 style examples: 45 00 00 73 00 00 40 00 40 11
        // [b8 61] c0 a8 00 01 c0 a8 00 c7.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
    }
}
