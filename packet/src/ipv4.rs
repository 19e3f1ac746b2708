//! IPv4 headers (RFC 791).
//!
//! [`Packet::new_checked`] accepts a buffer that starts with a whole IPv4
//! header: version 4, a header length of at least 20 bytes, all of it in the
//! buffer. The total length field is *not* checked against the buffer: the
//! view may be over the header slot alone while the payload lies in other
//! buffers. Compare [`Packet::total_len`] with what you hold.
//!
//! ```
//! use packet::ipv4::Packet;
//! let mut h = [0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
//! let mut ip = Packet::new_checked(&mut h[..]).unwrap();
//! ip.fill_checksum();
//! assert!(ip.checksum_ok());
//! assert_eq!((ip.header_len(), ip.total_len(), ip.protocol()), (20, 40, 6));
//! assert!(!ip.is_fragment());
//! h[0] = 0x44; // IHL 4: 16 bytes, below the minimum
//! assert!(Packet::new_checked(&h[..]).is_err());
//! ```

use crate::checksum;
use crate::{get16, put16, Error, Result};

pub const MIN_HEADER_LEN: usize = 20;
pub const MAX_HEADER_LEN: usize = 60;
/// Largest datagram: the total length field has 16 bits.
pub const MAX_PACKET_LEN: usize = 0xFFFF;

/// Where each field lies.
pub mod field {
    use std::ops::Range;
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    /// Flags (3 bits) and fragment offset (13 bits, in 8-byte units).
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    /// Source and destination, adjacent: the pseudo-header's addresses.
    pub const ADDRS: Range<usize> = 12..20;
}

/// Bits of the flags/fragment-offset word.
pub const DONT_FRAG: u16 = 0x4000;
pub const MORE_FRAGS: u16 = 0x2000;
pub const FRAG_OFFSET: u16 = 0x1FFF;

view!(
    /// A view over an IPv4 header (and whatever follows it in the buffer).
    Packet
);

/// Version 4, a header length of at least 20 bytes, all of it in `b`.
fn check(b: &[u8]) -> Result<()> {
    let Some(&vi) = b.get(field::VER_IHL) else {
        return Err(Error::Truncated);
    };
    let ihl = (vi & 0x0F) as usize * 4;
    if vi >> 4 != 4 || ihl < MIN_HEADER_LEN {
        return Err(Error::Malformed);
    }
    if b.len() < ihl {
        return Err(Error::Truncated);
    }
    Ok(())
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL x 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        (self.buf.as_ref()[field::VER_IHL] & 0x0F) as usize * 4
    }

    /// Header plus payload, as the header declares it.
    #[inline]
    pub fn total_len(&self) -> usize {
        get16(self.buf.as_ref(), field::TOTAL_LEN) as usize
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        get16(self.buf.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn flags_frag(&self) -> u16 {
        get16(self.buf.as_ref(), field::FLAGS_FRAG)
    }

    /// MF set or a non-zero fragment offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (MORE_FRAGS | FRAG_OFFSET) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buf.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC_ADDR]);
        a
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buf.as_ref()[field::DST_ADDR]);
        a
    }

    /// Source and destination address bytes (for [`checksum::pseudo_header`]).
    #[inline]
    pub fn addrs(&self) -> &[u8] {
        &self.buf.as_ref()[field::ADDRS]
    }

    /// The header bytes, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }

    /// The header checksum is right.
    #[inline]
    pub fn checksum_ok(&self) -> bool {
        checksum::fold(checksum::sum(self.header(), 0)) == 0xFFFF
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buf.as_mut()[field::VER_IHL] = 0x40 | (len / 4) as u8;
    }

    #[inline]
    pub fn set_flags_frag(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::FLAGS_FRAG, v);
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buf.as_mut()[field::TTL] = ttl;
    }

    #[inline]
    pub fn set_protocol(&mut self, p: u8) {
        self.buf.as_mut()[field::PROTOCOL] = p;
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        self.buf.as_mut()[field::SRC_ADDR].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        self.buf.as_mut()[field::DST_ADDR].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buf.as_mut(), field::TOTAL_LEN, len);
    }

    #[inline]
    pub fn set_ident(&mut self, id: u16) {
        put16(self.buf.as_mut(), field::IDENT, id);
    }

    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put16(self.buf.as_mut(), field::CHECKSUM, c);
    }

    /// Computes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let c = header_checksum(self.header());
        self.set_checksum(c);
    }
}

/// The checksum to store in IPv4 header `hdr` (its checksum field counted
/// as zero, whatever it holds). `hdr` holds at least [`MIN_HEADER_LEN`]
/// bytes.
#[inline]
pub fn header_checksum(hdr: &[u8]) -> u16 {
    let c = field::CHECKSUM;
    !checksum::fold(checksum::sum(&hdr[c + 2..], checksum::sum(&hdr[..c], 0)))
}
