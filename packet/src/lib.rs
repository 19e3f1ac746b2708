//! The wire formats the driver's users speak, declared once: typed, checked
//! views over Ethernet, IPv4, IPv6, TCP and UDP headers, the Internet
//! checksum, the TCP segment rewriter and a one-pass frame classifier.
//!
//! | module | what it owns |
//! |---|---|
//! | [`ethernet`], [`ipv4`], [`ipv6`], [`tcp`], [`udp`] | field offsets as named constants and a `Packet`/`Frame` view: `new_checked` validates lengths once, then accessors are plain loads |
//! | [`checksum`] | the Internet checksum (RFC 1071), pseudo-header sums, a running sum over pieces, incremental update (RFC 1624) |
//! | [`segment`] | cutting a TCP segment into smaller ones: the header of each piece |
//! | [`parse`] | classifying a frame once (offsets, protocols) the way the igb hardware does, and verifying its checksums |
//!
//! The views follow the pattern of smoltcp's `wire` module: a view is a
//! thin wrapper around anything that is `AsRef<[u8]>` (and `AsMut<[u8]>`
//! for the setters), so the same code reads a header slot, a page or a
//! `Vec`. Nothing here allocates, and nothing panics on input:
//! `new_checked` returns an [`Error`], and the classifier stops at the first
//! truncated header. `new_unchecked` is for callers that validated the
//! length themselves; its accessors index the buffer and panic if it is too
//! short.
//!
//! ```
//! use packet::{ethernet, ipv4, udp};
//! // 14 + 20 + 8 bytes: Ethernet, IPv4 (UDP), UDP with 0 payload bytes.
//! let mut f = [0u8; 42];
//! f[12..14].copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
//! f[14] = 0x45;
//! f[16..18].copy_from_slice(&28u16.to_be_bytes());
//! f[23] = packet::ip_proto::UDP;
//! let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
//! let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
//! assert_eq!((ip.header_len(), ip.total_len()), (20, 28));
//! let u = udp::Packet::new_checked(&eth.payload()[ip.header_len()..]).unwrap();
//! assert_eq!(u.len(), 0);
//! ```

#![forbid(unsafe_code)]

/// Declares a view type over a header: the struct, `new_unchecked`,
/// `new_checked` (which runs the module's `check` on the bytes once) and
/// `into_inner`. Each module adds its accessors.
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name<T> {
            buf: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// No check: the accessors panic if `buf` is shorter than the
            /// header.
            #[inline]
            pub fn new_unchecked(buf: T) -> $name<T> {
                $name { buf }
            }

            /// A view over `buf` if it holds a valid header (see the module
            /// documentation for what is checked).
            #[inline]
            pub fn new_checked(buf: T) -> $crate::Result<$name<T>> {
                check(buf.as_ref())?;
                Ok($name { buf })
            }

            /// The buffer back.
            pub fn into_inner(self) -> T {
                self.buf
            }
        }
    };
}

/// The accessors TCP and UDP share: the ports, which lead both headers, and
/// the checksum at the module's `field::CHECKSUM`. `l4_setters!` writes
/// them.
macro_rules! l4_accessors {
    () => {
        #[inline]
        pub fn src_port(&self) -> u16 {
            $crate::get16(self.buf.as_ref(), field::SRC_PORT)
        }

        #[inline]
        pub fn dst_port(&self) -> u16 {
            $crate::get16(self.buf.as_ref(), field::DST_PORT)
        }

        /// The checksum field (in UDP, 0 means the sender computed none).
        #[inline]
        pub fn checksum(&self) -> u16 {
            $crate::get16(self.buf.as_ref(), field::CHECKSUM)
        }
    };
}

macro_rules! l4_setters {
    () => {
        #[inline]
        pub fn set_src_port(&mut self, p: u16) {
            $crate::put16(self.buf.as_mut(), field::SRC_PORT, p);
        }

        #[inline]
        pub fn set_dst_port(&mut self, p: u16) {
            $crate::put16(self.buf.as_mut(), field::DST_PORT, p);
        }

        #[inline]
        pub fn set_checksum(&mut self, c: u16) {
            $crate::put16(self.buf.as_mut(), field::CHECKSUM, c);
        }
    };
}

pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod segment;
pub mod tcp;
pub mod udp;

use std::fmt;

/// IP protocol numbers (the IPv4 protocol / IPv6 next-header field).
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
}

/// Why a buffer is not a valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header (or than the length the header
    /// declares for itself).
    Truncated,
    /// A field contradicts the format: a wrong version, a header length
    /// below the minimum.
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "header truncated",
            Error::Malformed => "header malformed",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Big-endian loads and stores at a field's offset. Callers hold a buffer
/// whose length was checked; out-of-range offsets panic like slice indexing
/// (one bounds check per field).
#[inline(always)]
pub(crate) fn get16(b: &[u8], at: usize) -> u16 {
    let mut w = [0u8; 2];
    w.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(w)
}

#[inline(always)]
pub(crate) fn get32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
