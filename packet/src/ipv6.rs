//! IPv6 fixed headers (RFC 8200) and the extension header numbers
//! [`crate::parse`] walks.
//!
//! ```
//! use packet::ipv6::Packet;
//! let mut h = [0u8; 40];
//! h[0] = 0x60;
//! h[6] = packet::ip_proto::UDP;
//! let mut ip = Packet::new_checked(&mut h[..]).unwrap();
//! ip.set_payload_len(8);
//! assert_eq!((ip.payload_len(), ip.next_header()), (8, 17));
//! assert_eq!(ip.addrs().len(), 32);
//! ```

use crate::{get16, put16, Error, Result};

pub const HEADER_LEN: usize = 40;

/// Where each field lies.
pub mod field {
    use std::ops::Range;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
    /// Source and destination, adjacent: the pseudo-header's addresses.
    pub const ADDRS: Range<usize> = 8..40;
}

/// Extension header numbers (next-header values).
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const DEST_OPTS: u8 = 60;
    pub const MOBILITY: u8 = 135;
    /// Length of the fragment header.
    pub const FRAGMENT_LEN: usize = 8;
}

view!(
    /// A view over an IPv6 fixed header (and whatever follows it).
    Packet
);

/// The 40-byte fixed header, version 6.
fn check(b: &[u8]) -> Result<()> {
    if b.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    if b[0] >> 4 != 6 {
        return Err(Error::Malformed);
    }
    Ok(())
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[0] >> 4
    }

    /// Bytes after the fixed header (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> usize {
        get16(self.buf.as_ref(), field::PAYLOAD_LEN) as usize
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[field::NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC_ADDR]);
        a
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[field::DST_ADDR]);
        a
    }

    /// Source and destination address bytes (for
    /// [`crate::checksum::pseudo_header`]).
    #[inline]
    pub fn addrs(&self) -> &[u8] {
        &self.buf.as_ref()[field::ADDRS]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, traffic class and flow label 0.
    #[inline]
    pub fn set_version(&mut self) {
        self.buf.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    #[inline]
    pub fn set_next_header(&mut self, n: u8) {
        self.buf.as_mut()[field::NEXT_HEADER] = n;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = h;
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::SRC_ADDR].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buf.as_mut()[field::DST_ADDR].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buf.as_mut(), field::PAYLOAD_LEN, len);
    }
}
