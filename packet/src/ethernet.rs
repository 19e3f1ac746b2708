//! Ethernet II frames: destination and source MAC, ethertype, payload;
//! 802.1Q / 802.1ad tags are recognised by [`crate::parse`].
//!
//! ```
//! use packet::ethernet::{ethertype, Frame, HEADER_LEN};
//! let mut buf = [0u8; 60];
//! let mut f = Frame::new_checked(&mut buf[..]).unwrap();
//! f.set_dst_addr([0xFF; 6]);
//! f.set_ethertype(ethertype::IPV6);
//! assert_eq!(f.ethertype(), 0x86DD);
//! assert_eq!(f.payload().len(), 60 - HEADER_LEN);
//! assert!(Frame::new_checked(&buf[..13]).is_err());
//! ```

use crate::{get16, put16, Error, Result};

/// Header length without VLAN tags.
pub const HEADER_LEN: usize = 14;
/// Minimum frame length without FCS; a MAC pads shorter frames.
pub const MIN_FRAME_LEN: usize = 60;
/// Length of one 802.1Q / 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;

/// Where each field lies.
pub mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    /// The ethertype, or the TPID of a VLAN tag: the tag's TCI follows,
    /// then the next ethertype, 4 bytes further on.
    pub const ETHERTYPE: usize = 12;
}

/// Ethertypes we name.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    /// 802.1Q tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad outer tag.
    pub const QINQ: u16 = 0x88A8;
    /// IEEE local experimental ethertype (the simulator's non-IP test frame).
    pub const LOCAL_EXP: u16 = 0x88B5;
}

view!(
    /// A view over an Ethernet frame (at least [`HEADER_LEN`] bytes).
    Frame
);

/// The buffer holds the 14-byte header.
fn check(b: &[u8]) -> Result<()> {
    if b.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    Ok(())
}

impl<T: AsRef<[u8]>> Frame<T> {
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf.as_ref()[field::DST]);
        a
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf.as_ref()[field::SRC]);
        a
    }

    /// The ethertype field (a VLAN tag's TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get16(self.buf.as_ref(), field::ETHERTYPE)
    }

    /// The bytes after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buf.as_mut()[field::DST].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buf.as_mut(), field::ETHERTYPE, t);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}
