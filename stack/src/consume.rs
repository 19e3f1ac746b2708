//! What the application does with the bytes of a TCP stream, stated
//! rather than implied: the same consumer runs behind every rung of the
//! copy ladder (`rxsink --copies 2|1|0`), so the rungs differ only in the
//! copies the receive path makes.
//!
//! - [`Touch::None`]: count the bytes without reading them (what the
//!   kernel's devmem and zcrx benchmarks do).
//! - [`Touch::Read`]: read every byte, summing the stream in 64-bit words
//!   (the sum goes through [`std::hint::black_box`], so the reads cannot be
//!   optimised away).
//! - `verify`: check every byte against the [`pattern`]; it reads every
//!   byte too.
//!
//! [`Copies`] names the rungs; the copy itself is the caller's (a
//! `recv_slice` into [`Stream`]'s own buffer, a read in place from the
//! socket ring, or a read in place from the NIC's payload page).

use crate::pattern;
use std::fmt;
use std::str::FromStr;

/// Copies on the receive path, NIC buffer to application.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Copies {
    /// The stack copies into its socket ring, the application copies out
    /// of it into its own buffer (classic `recv`).
    #[serde(rename = "2")]
    Two,
    /// The stack copies into its socket ring, the application reads the
    /// ring in place.
    #[default]
    #[serde(rename = "1")]
    One,
    /// The application reads the NIC's payload pages in place and returns
    /// them (devmem TCP, io_uring zcrx).
    #[serde(rename = "0")]
    Zero,
}

impl FromStr for Copies {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "2" => Ok(Copies::Two),
            "1" => Ok(Copies::One),
            "0" => Ok(Copies::Zero),
            _ => Err(format!("{s:?} is not 2, 1 or 0")),
        }
    }
}

impl fmt::Display for Copies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Copies::Two => "2",
            Copies::One => "1",
            Copies::Zero => "0",
        })
    }
}

/// Whether the application reads the bytes it receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Touch {
    /// Count them only.
    #[default]
    None,
    /// Read every byte (a sum in 64-bit words).
    Read,
}

impl FromStr for Touch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Touch::None),
            "read" => Ok(Touch::Read),
            _ => Err(format!("{s:?} is not none or read")),
        }
    }
}

impl fmt::Display for Touch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Touch::None => "none",
            Touch::Read => "read",
        })
    }
}

/// What the application does with each piece of a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consumer {
    pub touch: Touch,
    /// Check every byte against the [`pattern`].
    pub verify: bool,
}

/// Totals of a [`Consumer`], all its streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConsumeStats {
    /// Bytes handed to the application.
    pub bytes: u64,
    /// Bytes the application read ([`Touch::Read`]).
    pub touched: u64,
    /// Bytes checked against the pattern and found right.
    pub verified: u64,
    /// Streams that did not match the pattern (counted once per stream,
    /// at its first wrong byte; the rest of that stream is not checked).
    pub mismatches: u64,
}

impl std::ops::AddAssign for ConsumeStats {
    fn add_assign(&mut self, o: ConsumeStats) {
        self.bytes += o.bytes;
        self.touched += o.touched;
        self.verified += o.verified;
        self.mismatches += o.mismatches;
    }
}

/// Where one stream stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    /// Stream offset of the next byte.
    pub offset: u64,
    /// Verification stopped at a mismatch.
    pub broken: bool,
}

impl Consumer {
    /// The application takes `data`, the next bytes of `stream`.
    #[inline]
    pub fn consume(&self, stream: &mut Stream, data: &[u8], st: &mut ConsumeStats) {
        if self.touch == Touch::Read {
            std::hint::black_box(sum_words(data));
            st.touched += data.len() as u64;
        }
        if self.verify && !stream.broken {
            match pattern::check(stream.offset, data) {
                None => st.verified += data.len() as u64,
                Some(i) => {
                    st.verified += i as u64;
                    st.mismatches += 1;
                    stream.broken = true;
                    tracing::warn!(
                        "pattern mismatch at stream offset {}",
                        stream.offset + i as u64
                    );
                }
            }
        }
        stream.offset += data.len() as u64;
        st.bytes += data.len() as u64;
    }
}

/// The bytes summed as little-endian 64-bit words (the tail zero-padded):
/// one load per eight bytes, which the compiler vectorises.
pub fn sum_words(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(8);
    let mut acc = 0u64;
    for w in words.by_ref() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        acc = acc.wrapping_add(u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        acc = acc.wrapping_add(u64::from_le_bytes(b));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_words_reads_every_byte() {
        let data: Vec<u8> = (0..21u8).collect();
        let expect: u64 = data
            .chunks(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .fold(0, u64::wrapping_add);
        assert_eq!(sum_words(&data), expect);
        // Any byte changed changes the sum.
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 1;
            assert_ne!(sum_words(&d), expect, "byte {i}");
        }
    }

    #[test]
    fn consumer_counts_touches_and_verifies() {
        let c = Consumer {
            touch: Touch::Read,
            verify: true,
        };
        let mut s = Stream::default();
        let mut st = ConsumeStats::default();
        let mut data = vec![0u8; 600];
        pattern::fill(0, &mut data);
        c.consume(&mut s, &data[..100], &mut st);
        c.consume(&mut s, &data[100..], &mut st);
        assert_eq!(
            (st.bytes, st.touched, st.verified, st.mismatches),
            (600, 600, 600, 0)
        );
        data[10] ^= 0xff;
        let mut s2 = Stream::default();
        c.consume(&mut s2, &data, &mut st);
        assert_eq!((st.verified, st.mismatches), (610, 1));
        assert!(s2.broken);
        let none = Consumer::default();
        none.consume(&mut s2, &data, &mut st);
        assert_eq!((st.bytes, st.touched), (1800, 1200));
    }

    #[test]
    fn copies_and_touch_parse_and_print() {
        for s in ["2", "1", "0"] {
            assert_eq!(s.parse::<Copies>().unwrap().to_string(), s);
        }
        for s in ["none", "read"] {
            assert_eq!(s.parse::<Touch>().unwrap().to_string(), s);
        }
        assert!("3".parse::<Copies>().is_err());
        assert!("write".parse::<Touch>().is_err());
    }
}
