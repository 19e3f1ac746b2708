//! UDP headers (RFC 768).
//!
//! ```
//! use packet::{checksum, udp::Packet};
//! let mut d = [0u8; 12];
//! let mut u = Packet::new_checked(&mut d[..]).unwrap();
//! u.set_src_port(1000);
//! u.set_dst_port(2000);
//! u.set_len(12);
//! u.fill_checksum(checksum::pseudo_header(&[10, 0, 0, 1, 10, 0, 0, 2], 17, 12));
//! assert_ne!(u.checksum(), 0); // 0 would mean "no checksum"
//! assert_eq!(u.payload().len(), 4);
//! ```

use crate::checksum;
use crate::{get16, put16, Error, Result};

pub const HEADER_LEN: usize = 8;

/// Where each field lies.
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    /// Header plus payload.
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

view!(
    /// A view over a UDP header and the payload after it in the buffer.
    Packet
);

/// The 8-byte header (the length field is not checked against `b`).
fn check(b: &[u8]) -> Result<()> {
    if b.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    Ok(())
}

impl<T: AsRef<[u8]>> Packet<T> {
    l4_accessors!();

    /// Payload bytes according to the length field.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw_len().saturating_sub(HEADER_LEN)
    }

    fn raw_len(&self) -> usize {
        get16(self.buf.as_ref(), field::LENGTH) as usize
    }

    /// The length field as it is (header plus payload).
    #[inline]
    pub fn length(&self) -> usize {
        self.raw_len()
    }

    /// The length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.raw_len() <= HEADER_LEN
    }

    /// The bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    l4_setters!();

    /// Sets the length field (header plus payload).
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        put16(self.buf.as_mut(), field::LENGTH, len);
    }

    /// Computes and stores the checksum over the whole buffer with `pseudo`
    /// from [`checksum::pseudo_header`]; a computed 0 is sent as 0xFFFF
    /// (RFC 768: 0 means "no checksum").
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = match !checksum::fold(checksum::sum(self.buf.as_ref(), pseudo)) {
            0 => 0xFFFF,
            c => c,
        };
        self.set_checksum(c);
    }
}
