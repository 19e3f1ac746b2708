//! TCP headers (RFC 9293).
//!
//! [`Packet::new_checked`] accepts a buffer holding a whole TCP header: at
//! least 20 bytes, a data offset of at least 5 words, the options in the
//! buffer.
//!
//! ```
//! use packet::tcp::{flags, Packet};
//! let mut h = [0u8; 20];
//! h[12] = 5 << 4;
//! let mut t = Packet::new_checked(&mut h[..]).unwrap();
//! t.set_seq(1000);
//! t.set_flags(flags::ACK | flags::PSH);
//! assert_eq!((t.seq(), t.header_len(), t.flags()), (1000, 20, 0x18));
//! assert!(t.payload().is_empty());
//! h[12] = 6 << 4; // 24 bytes of header in a 20-byte buffer
//! assert!(Packet::new_checked(&h[..]).is_err());
//! ```

use crate::checksum;
use crate::{get16, get32, put16, put32, Error, Result};

pub const MIN_HEADER_LEN: usize = 20;
pub const MAX_HEADER_LEN: usize = 60;

/// Where each field lies.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset in 32-bit words (high nibble), reserved bits and NS.
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// Bits of the flags byte.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

view!(
    /// A view over a TCP header and the payload after it in the buffer.
    Packet
);

/// A data offset of at least 20 bytes, the whole header in `b`.
fn check(b: &[u8]) -> Result<()> {
    if b.len() < MIN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    let hlen = header_len_of(b[field::DATA_OFF]);
    if hlen < MIN_HEADER_LEN {
        return Err(Error::Malformed);
    }
    if b.len() < hlen {
        return Err(Error::Truncated);
    }
    Ok(())
}

/// The header length a data-offset byte declares.
#[inline]
pub fn header_len_of(data_off: u8) -> usize {
    (data_off >> 4) as usize * 4
}

impl<T: AsRef<[u8]>> Packet<T> {
    l4_accessors!();

    #[inline]
    pub fn seq(&self) -> u32 {
        get32(self.buf.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack(&self) -> u32 {
        get32(self.buf.as_ref(), field::ACK)
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        header_len_of(self.buf.as_ref()[field::DATA_OFF])
    }

    /// The reserved bits and NS (low nibble of the data-offset byte).
    #[inline]
    pub fn reserved_ns(&self) -> u8 {
        self.buf.as_ref()[field::DATA_OFF] & 0x0F
    }

    /// The [`flags`] byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }

    #[inline]
    pub fn window(&self) -> u16 {
        get16(self.buf.as_ref(), field::WINDOW)
    }

    /// The bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    l4_setters!();

    /// Sets the data offset (a multiple of 4, 20..=60) and clears the
    /// reserved bits and NS.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        self.buf.as_mut()[field::DATA_OFF] = ((len / 4) as u8) << 4;
    }

    #[inline]
    pub fn set_seq(&mut self, v: u32) {
        put32(self.buf.as_mut(), field::SEQ, v);
    }

    #[inline]
    pub fn set_ack(&mut self, v: u32) {
        put32(self.buf.as_mut(), field::ACK, v);
    }

    #[inline]
    pub fn set_flags(&mut self, f: u8) {
        self.buf.as_mut()[field::FLAGS] = f;
    }

    #[inline]
    pub fn set_window(&mut self, v: u16) {
        put16(self.buf.as_mut(), field::WINDOW, v);
    }

    /// Computes and stores the checksum over the whole buffer (header and
    /// payload) with `pseudo` from [`checksum::pseudo_header`].
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::sum(self.buf.as_ref(), pseudo));
        self.set_checksum(c);
    }
}
