//! The Internet checksum (RFC 1071), in one place.
//!
//! - [`sum`] adds bytes to a ones-complement accumulator (an `u64` that
//!   callers can add to freely: it is folded once at the end), [`fold`]
//!   folds it to 16 bits and [`checksum`] is the complemented fold, the
//!   value stored in a header.
//! - [`pseudo_header`] sums the TCP/UDP pseudo-header of IPv4 or IPv6 from
//!   the adjacent source and destination address bytes.
//! - [`Sum`] runs over data that arrives in pieces of any length (a packet
//!   spread over several buffers).
//! - [`update`] adjusts a stored checksum after a 16-bit field changed,
//!   without reading the rest of the data (RFC 1624, equation 3).
//!
//! A block of data that holds its own correct checksum sums to `0xFFFF`.
//!
//! ```
//! use packet::checksum;
//! // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
//! let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
//! assert_eq!(checksum::fold(checksum::sum(&data, 0)), 0xddf2);
//! // Change the first word from 0001 to 0102: the update equals a recomputation.
//! let old = checksum::checksum(&data);
//! let mut new_data = data;
//! new_data[..2].copy_from_slice(&[0x01, 0x02]);
//! assert_eq!(checksum::update(old, 0x0001, 0x0102), checksum::checksum(&new_data));
//! ```

/// Adds `data` as big-endian 16-bit words to the accumulator `init`. An odd
/// trailing byte is padded with zero, as RFC 1071 asks.
///
/// The words are summed in native (little-endian) order and the folded sum
/// is byte-swapped once at the end (RFC 1071 2(B): the ones-complement sum
/// commutes with byte swapping); 2^32 = 1 mod 0xFFFF, so adding 32-bit
/// halves of 64-bit loads folds to the same sum. Headers (the common case)
/// take a plain scalar loop; long payloads a vectorisable one.
#[inline]
pub fn sum(data: &[u8], init: u64) -> u64 {
    let mut acc = 0u64;
    let mut rest = data;
    if rest.len() >= 256 {
        let mut chunks = rest.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            acc += (v & 0xFFFF_FFFF) + (v >> 32);
        }
        rest = chunks.remainder();
    }
    while let [a, b, c, d, e, f, g, h, tail @ ..] = rest {
        let v = u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]);
        acc += (v & 0xFFFF_FFFF) + (v >> 32);
        rest = tail;
    }
    while let [a, b, tail @ ..] = rest {
        acc += u16::from_le_bytes([*a, *b]) as u64;
        rest = tail;
    }
    if let [a] = rest {
        acc += *a as u64;
    }
    init + fold(acc).swap_bytes() as u64
}

/// Folds an accumulator to 16 bits (not complemented).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: the complemented folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// The pseudo-header sum of TCP or UDP: `addrs` are the source and
/// destination addresses as they lie in the IP header (8 bytes for IPv4,
/// 32 for IPv6), `len` the upper-layer length.
#[inline]
pub fn pseudo_header(addrs: &[u8], proto: u8, len: u32) -> u64 {
    sum(
        addrs,
        proto as u64 + (len >> 16) as u64 + (len & 0xFFFF) as u64,
    )
}

/// Updates a stored checksum `old_csum` after a 16-bit word of the data
/// changed from `old` to `new` (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
/// Equal to recomputing from scratch when `old_csum` was right.
#[inline]
pub fn update(old_csum: u16, old: u16, new: u16) -> u16 {
    !fold(!old_csum as u64 + !old as u64 + new as u64)
}

/// [`update`] for a 32-bit field (a sequence number, an IPv4 address).
#[inline]
pub fn update32(old_csum: u16, old: u32, new: u32) -> u16 {
    let acc = !old_csum as u64
        + (!(old >> 16) & 0xFFFF) as u64
        + (!old & 0xFFFF) as u64
        + (new >> 16) as u64
        + (new & 0xFFFF) as u64;
    !fold(acc)
}

/// A running ones-complement sum over bytes fed in pieces of any length
/// (an odd-length piece carries its last byte into the next one).
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
        if let Some(hi) = self.odd.take() {
            let Some((&lo, rest)) = data.split_first() else {
                self.odd = Some(hi);
                return;
            };
            self.acc += u16::from_be_bytes([hi, lo]) as u64;
            data = rest;
        }
        let even = data.len() & !1;
        if even < data.len() {
            self.odd = Some(data[even]);
        }
        // `sum` folds what it adds, so the accumulator grows by at most
        // 2^16 per piece: no overflow for any realistic number of pieces.
        self.acc = sum(&data[..even], self.acc);
    }

    /// Adds a 16-bit word (a pseudo-header field); only meaningful at an
    /// even position.
    pub fn add_u16(&mut self, v: u16) {
        debug_assert!(self.odd.is_none());
        self.acc += v as u64;
    }

    /// Adds an accumulator from [`sum`] or [`pseudo_header`].
    pub fn add_acc(&mut self, acc: u64) {
        self.acc += fold(acc) as u64;
    }

    /// The folded 16-bit sum (not complemented). Data that includes its own
    /// correct checksum gives 0xFFFF.
    pub fn folded(&self) -> u16 {
        let hi = self.odd.map_or(0, |b| (b as u64) << 8);
        fold(self.acc + hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 as written: one big-endian word at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for c in data.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
        }
        fold(acc)
    }

    #[test]
    fn rfc1071_example_and_odd_length() {
        assert_eq!(
            fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)),
            0xddf2
        );
        assert_eq!(fold(sum(&[0x01], 0)), 0x0100);
    }

    #[test]
    fn ipv4_header_of_a_known_packet() {
        // 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(fold(sum(&h, 0)), 0xFFFF);
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

    proptest! {
        #[test]
        fn sum_matches_the_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(fold(sum(&data, 0)), reference(&data));
        }

        /// RFC 1624: updating a correct checksum after a field changed gives
        /// what a recomputation gives (both never produce 0xFFFF for data
        /// that is not all zeros, so the representations agree too).
        #[test]
        fn incremental_update_equals_recomputation(
            mut data in proptest::collection::vec(any::<u8>(), 8..200),
            at in 0usize..100,
            new16 in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            data[0] |= 0x40; // never all zeros
            let w = (at % ((data.len() - 4) / 2)) * 2 + 2;
            let c = checksum(&data);
            let old16 = u16::from_be_bytes([data[w], data[w + 1]]);
            data[w..w + 2].copy_from_slice(&new16.to_be_bytes());
            let c16 = update(c, old16, new16);
            prop_assert_eq!(c16, checksum(&data));
            let old32 = u32::from_be_bytes([data[w], data[w + 1], data[w + 2], data[w + 3]]);
            data[w..w + 4].copy_from_slice(&new32.to_be_bytes());
            prop_assert_eq!(update32(c16, old32, new32), checksum(&data));
        }

        #[test]
        fn running_sum_matches_one_buffer(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort();
            let mut s = Sum::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain(std::iter::once(data.len())) {
                s.add(&data[prev..c]);
                prev = c;
            }
            prop_assert_eq!(s.folded(), reference(&data));
        }
    }
}
